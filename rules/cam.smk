# CAM: train the classifier, write multi-scale CAMs, evaluate them against the masks.


# Seconds of work each: on a cluster they run on the submit host instead of waiting in the queue as jobs.
localrules:
    eval_cams,


rule train_cam:
    input:
        train=cam_train_csv,
        val=split_csv("val"),
        weights=weights_input,
    output:
        model=f"{R}/{{method}}/cam/model.pt",
        log_csv=f"{R}/{{method}}/cam/train_log.csv",
    log:
        f"{LOGS}/train_cam/{{method}}.log",
    benchmark:
        f"{BENCH}/train_cam/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=gpu_count(),
    params:
        code=script_code("train_cam.py"),
        hp=lambda wc: cam_training_params(wc.method),
        resume=lambda wc: f"{R}/{wc.method}/cam/.resume/train_cam.pt",
    script:
        "../workflow/scripts/train_cam.py"


rule make_cams:
    input:
        model=final_cam_model,
        split=cam_and_pseudo_split_csvs,
    output:
        f"{R}/{{method}}/cam/cams.h5",
    log:
        f"{LOGS}/make_cams/{{method}}.log",
    benchmark:
        f"{BENCH}/make_cams/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=gpu_count(),
    params:
        code=script_code("make_cams.py"),
        hp=lambda wc: {"make_cams": hparams(wc.method)["make_cams"]},
    script:
        "../workflow/scripts/make_cams.py"


rule eval_cams:
    input:
        cams=rules.make_cams.output[0],
        split=cam_split_csv,
    output:
        f"{R}/{{method}}/cam/miou.json",
    log:
        f"{LOGS}/eval_cams/{{method}}.log",
    benchmark:
        f"{BENCH}/eval_cams/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("eval_cams.py"),
        hp=lambda wc: {"eval_cams": hparams(wc.method)["eval_cams"]},
    script:
        "../workflow/scripts/eval_cams.py"
