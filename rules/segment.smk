# Segmentation: DeepLab on the method's pseudo-labels, val predictions, their mIoU, and the per-method
# result gathering the three stages.


# Seconds of work each: on a cluster they run on the submit host instead of waiting in the queue as jobs.
localrules:
    eval_segmentation,
    method_miou,


rule train_deeplab:
    input:
        unpack(segment_start),
        pseudo=rules.random_walk.output[0],
        split=pseudo_split_csv,
    output:
        model=f"{R}/{{method}}/seg/model.pt",
        log_csv=f"{R}/{{method}}/seg/train_log.csv",
    log:
        f"{LOGS}/train_deeplab/{{method}}.log",
    benchmark:
        f"{BENCH}/train_deeplab/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=gpu_count(),
    params:
        code=script_code("train_deeplab.py"),
        hp=lambda wc: segment_training_params(wc.method),
        resume=lambda wc: f"{R}/{wc.method}/seg/.resume/train_deeplab.pt",
    script:
        "../workflow/scripts/train_deeplab.py"


rule infer_deeplab:
    input:
        model=rules.train_deeplab.output.model,
        split=segment_eval_csv,
    output:
        directory(f"{R}/{{method}}/seg/pred"),
    log:
        f"{LOGS}/infer_deeplab/{{method}}.log",
    benchmark:
        f"{BENCH}/infer_deeplab/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: POOL_THREADS
    resources:
        gpu=gpu_count(),
    params:
        code=script_code("infer_deeplab.py"),
        hp=lambda wc: segment_params(wc.method, "infer", "crf"),
    script:
        "../workflow/scripts/infer_deeplab.py"


rule eval_segmentation:
    input:
        pred=rules.infer_deeplab.output[0],
        split=segment_eval_csv,
        model=rules.train_deeplab.output.model,
    output:
        f"{R}/{{method}}/seg/miou.json",
    log:
        f"{LOGS}/eval_segmentation/{{method}}.log",
    benchmark:
        f"{BENCH}/eval_segmentation/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("eval_segmentation.py"),
    script:
        "../workflow/scripts/eval_segmentation.py"


rule method_miou:
    input:
        cam=rules.eval_cams.output[0],
        pseudo=rules.eval_pseudo_labels.output[0],
        seg=rules.eval_segmentation.output[0],
    output:
        f"{R}/{{method}}/miou.json",
    log:
        f"{LOGS}/method_miou/{{method}}.log",
    benchmark:
        f"{BENCH}/method_miou/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("method_miou.py"),
    script:
        "../workflow/scripts/method_miou.py"
