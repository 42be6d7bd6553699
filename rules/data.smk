# Data: materialise the dataset in VOC layout, write split tables, fetch backbone weights.
# The downloads carry no code hash: their bytes are fixed by checksums, and an edit of the download
# code must not fetch gigabytes again.


# Downloads need the internet (login nodes have it, compute nodes often not); prepare_splits is seconds of work.
localrules:
    download_voc,
    download_sbd,
    fetch_weights,
    prepare_splits,


rule make_synthetic:
    output:
        directory(config["synthetic"]["root"]),
    log:
        f"{LOGS}/make_synthetic.log",
    benchmark:
        f"{BENCH}/make_synthetic.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("make_synthetic.py"),
        spec={k: v for k, v in config["synthetic"].items() if k not in ("root", "job_threads", "hparams")},
    script:
        "../workflow/scripts/make_synthetic.py"


rule download_voc:
    output:
        f"{config['voc12']['download_dir']}/VOCtrainval_11-May-2012.tar",
    log:
        f"{LOGS}/download_voc.log",
    benchmark:
        f"{BENCH}/download_voc.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        url=config["voc12"]["voc_url"],
        md5=config["voc12"]["voc_md5"],
    script:
        "../workflow/scripts/download.py"


rule download_sbd:
    output:
        f"{config['voc12']['download_dir']}/benchmark.tgz",
    log:
        f"{LOGS}/download_sbd.log",
    benchmark:
        f"{BENCH}/download_sbd.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        url=config["voc12"]["sbd_url"],
        md5=config["voc12"]["sbd_md5"],
    script:
        "../workflow/scripts/download.py"


rule prepare_voc12:
    input:
        voc=rules.download_voc.output[0],
        sbd=rules.download_sbd.output[0],
    output:
        directory("data/voc12/VOC2012"),
    log:
        f"{LOGS}/prepare_voc12.log",
    benchmark:
        f"{BENCH}/prepare_voc12.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("prepare_voc12.py"),
    script:
        "../workflow/scripts/prepare_voc12.py"


rule prepare_splits:
    input:
        dataset_input,
    output:
        f"{R}/splits/{{split}}.csv",
    log:
        f"{LOGS}/prepare_splits/{{split}}.log",
    benchmark:
        f"{BENCH}/prepare_splits/{{split}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("prepare_splits.py"),
        root=voc_root(),
        class_names=class_names(),
    script:
        "../workflow/scripts/prepare_splits.py"


rule fetch_weights:
    output:
        "data/weights/{backbone}.pth",
    log:
        f"{LOGS}/fetch_weights/{{backbone}}.log",
    benchmark:
        f"{BENCH}/fetch_weights/{{backbone}}.tsv"
    wildcard_constraints:
        backbone="resnet18|resnet50|resnet101|vit_b_16",
    conda:
        "../envs/wsss.yaml"
    threads: 1
    script:
        "../workflow/scripts/fetch_weights.py"
