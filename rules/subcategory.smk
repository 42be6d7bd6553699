# Sub-category methods (SC-CAM exploration, sub-category teaching): features -> clusters -> retrain, per round.
# The teacher, the features and the clusters cover the classifier's own split (train_cam.split), so that
# every image the sub-category head learns from has a sub-category (train_aug: the PSA / IRN / SC-CAM protocol).


rule train_teacher:
    input:
        train=cam_train_csv,
        val=split_csv("val"),
        weights=teacher_weights,
    output:
        model=f"{R}/{{method}}/teacher/model.pt",
        log_csv=f"{R}/{{method}}/teacher/train_log.csv",
    log:
        f"{LOGS}/train_teacher/{{method}}.log",
    benchmark:
        f"{BENCH}/train_teacher/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=gpu_count(),
    params:
        code=script_code("train_teacher.py"),
        teacher=lambda wc: hparams(wc.method)["teacher"],
        resume=lambda wc: f"{R}/{wc.method}/teacher/.resume/train_teacher.pt",
    script:
        "../workflow/scripts/train_teacher.py"


rule extract_features:
    input:
        model=feature_model,
        split=cam_train_csv,
    output:
        f"{R}/{{method}}/round{{round}}/features.h5",
    log:
        f"{LOGS}/extract_features/{{method}}_round{{round}}.log",
    benchmark:
        f"{BENCH}/extract_features/{{method}}_round{{round}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=gpu_count(),
    params:
        code=script_code("extract_features.py"),
        kind=lambda wc: hparams(wc.method)["subcategory"]["features"],
        batch_size=lambda wc: hparams(wc.method)["subcategory"]["feature_batch_size"],
    script:
        "../workflow/scripts/extract_features.py"


checkpoint cluster_features:
    input:
        features=rules.extract_features.output[0],
        split=cam_train_csv,
    output:
        csv=f"{R}/{{method}}/round{{round}}/clusters.csv",
        json=f"{R}/{{method}}/round{{round}}/clusters.json",
    log:
        f"{LOGS}/cluster_features/{{method}}_round{{round}}.log",
    benchmark:
        f"{BENCH}/cluster_features/{{method}}_round{{round}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("cluster_features.py"),
        clustering=lambda wc: hparams(wc.method)["subcategory"]["clustering"],
    script:
        "../workflow/scripts/cluster_features.py"


rule train_subcategory:
    input:
        unpack(subcategory_start),
        train=cam_train_csv,
        val=split_csv("val"),
        clusters=f"{R}/{{method}}/round{{round}}/clusters.csv",
        clusters_json=clusters_of_round,
    output:
        model=f"{R}/{{method}}/round{{round}}/model.pt",
        log_csv=f"{R}/{{method}}/round{{round}}/train_log.csv",
    log:
        f"{LOGS}/train_subcategory/{{method}}_round{{round}}.log",
    benchmark:
        f"{BENCH}/train_subcategory/{{method}}_round{{round}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: JOB_THREADS
    resources:
        gpu=gpu_count(),
    params:
        code=script_code("train_subcategory.py"),
        hp=lambda wc: {**cam_training_params(wc.method), "subcategory": per_round_subcategory(wc.method)},
        n_subcategories=cluster_count,
        resume=lambda wc: f"{R}/{wc.method}/round{wc.round}/.resume/train_subcategory.pt",
    message:
        "train {wildcards.method} round {wildcards.round} with a sub-category head of {params.n_subcategories}"
    script:
        "../workflow/scripts/train_subcategory.py"
