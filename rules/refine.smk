# Refinement (PSA): confident CRF labels -> AffinityNet -> random walk -> pseudo-labels, for any method.


# Seconds of work each: on a cluster they run on the submit host instead of waiting in the queue as jobs.
localrules:
    eval_pseudo_labels,


rule crf_labels:
    input:
        cams=rules.make_cams.output[0],
        split=pseudo_split_csv,
    output:
        f"{R}/{{method}}/refine/affinity_labels.h5",
    log:
        f"{LOGS}/crf_labels/{{method}}.log",
    benchmark:
        f"{BENCH}/crf_labels/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: POOL_THREADS
    params:
        code=script_code("crf_labels.py"),
        hp=lambda wc: {"refine": {"crf": hparams(wc.method)["refine"]["crf"]}},
    script:
        "../workflow/scripts/crf_labels.py"


rule train_affinity:
    input:
        unpack(affinity_training_inputs),
        labels=rules.crf_labels.output[0],
        split=pseudo_split_csv,
    output:
        model=f"{R}/{{method}}/refine/affinity.pt",
        log_csv=f"{R}/{{method}}/refine/affinity_log.csv",
    log:
        f"{LOGS}/train_affinity/{{method}}.log",
    benchmark:
        f"{BENCH}/train_affinity/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=gpu_count(),
    params:
        code=script_code("train_affinity.py"),
        hp=lambda wc: affinity_training_params(wc.method),
        resume=lambda wc: f"{R}/{wc.method}/refine/.resume/train_affinity.pt",
    script:
        "../workflow/scripts/train_affinity.py"


rule random_walk:
    input:
        model=rules.train_affinity.output.model,
        cams=rules.make_cams.output[0],
        split=cam_and_pseudo_split_csvs,
    output:
        directory(f"{R}/{{method}}/refine/pseudo"),
    log:
        f"{LOGS}/random_walk/{{method}}.log",
    benchmark:
        f"{BENCH}/random_walk/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=gpu_count(),
    params:
        code=script_code("random_walk.py"),
        hp=lambda wc: {"refine": {"random_walk": hparams(wc.method)["refine"]["random_walk"]}},
    script:
        "../workflow/scripts/random_walk.py"


rule eval_pseudo_labels:
    input:
        pseudo=rules.random_walk.output[0],
        split=cam_split_csv,
    output:
        f"{R}/{{method}}/refine/miou.json",
    log:
        f"{LOGS}/eval_pseudo_labels/{{method}}.log",
    benchmark:
        f"{BENCH}/eval_pseudo_labels/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("eval_pseudo_labels.py"),
    script:
        "../workflow/scripts/eval_pseudo_labels.py"
