# Reports: tables across methods and the figures of each method.


# Seconds of work each, without torch: on a cluster they run on the submit host instead of waiting in the queue as
# jobs. plot_examples runs DeepLab on its images, so it stays a job.
localrules:
    cam_summary,
    summary,
    plot_training_curves,
    plot_scores,
    plot_subcategories,
    plot_stage_miou,
    plot_cam_comparison,


rule cam_summary:
    input:
        expand(f"{R}/{{method}}/cam/miou.json", method=METHODS),
    output:
        f"{R}/cam_summary.csv",
    log:
        f"{LOGS}/cam_summary.log",
    benchmark:
        f"{BENCH}/cam_summary.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("cam_summary.py"),
        methods=METHODS,
    script:
        "../workflow/scripts/cam_summary.py"


rule summary:
    input:
        results=expand(f"{R}/{{method}}/miou.json", method=METHODS),
    output:
        csv=f"{R}/summary.csv",
        md=f"{R}/summary.md",
        html=report(f"{R}/summary.html", caption="../workflow/report/summary.rst", category="all methods"),
    log:
        f"{LOGS}/summary.log",
    benchmark:
        f"{BENCH}/summary.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("summary.py"),
        methods=METHODS,
        published={method: HPARAMS[method].get("published") for method in METHODS},
        dataset=DATASET,
    script:
        "../workflow/scripts/summary.py"


# Figures: what people look at. Each lands in `snakemake --report` under its method (category) and what it shows
# (subcategory), with a caption saying how to read it (workflow/report/*.rst).


rule plot_training_curves:
    input:
        unpack(training_logs),
    output:
        report(
            f"{R}/{{method}}/figures/training_curves.png",
            caption="../workflow/report/training_curves.rst",
            category="{method}",
            subcategory="training",
        ),
    log:
        f"{LOGS}/plot_training_curves/{{method}}.log",
    benchmark:
        f"{BENCH}/plot_training_curves/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("plot_training_curves.py"),
    script:
        "../workflow/scripts/plot_training_curves.py"


rule plot_scores:
    input:
        method=rules.method_miou.output[0],
        cam=rules.eval_cams.output[0],
    output:
        per_class=report(
            f"{R}/{{method}}/figures/per_class_iou.png",
            caption="../workflow/report/per_class_iou.rst",
            category="{method}",
            subcategory="scores",
        ),
        thresholds=report(
            f"{R}/{{method}}/figures/cam_thresholds.png",
            caption="../workflow/report/cam_thresholds.rst",
            category="{method}",
            subcategory="scores",
        ),
    log:
        f"{LOGS}/plot_scores/{{method}}.log",
    benchmark:
        f"{BENCH}/plot_scores/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("plot_scores.py"),
    script:
        "../workflow/scripts/plot_scores.py"


rule plot_examples:
    input:
        split=split_csv(FIGURES["split"]),
        cams=rules.make_cams.output[0],
        labels=rules.crf_labels.output[0],
        pseudo=rules.random_walk.output[0],
        seg_model=rules.train_deeplab.output.model,
    output:
        report(
            f"{R}/{{method}}/figures/examples.png",
            caption="../workflow/report/examples.rst",
            category="{method}",
            subcategory="images",
        ),
    log:
        f"{LOGS}/plot_examples/{{method}}.log",
    benchmark:
        f"{BENCH}/plot_examples/{{method}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("plot_examples.py"),
        figures=FIGURES,
        hp=lambda wildcards: segment_params(wildcards.method, "infer"),
    script:
        "../workflow/scripts/plot_examples.py"


rule plot_subcategories:
    input:
        clusters=rules.cluster_features.output.csv,
        split=cam_train_csv,
    output:
        report(
            f"{R}/{{method}}/figures/subcategories_round{{round}}.png",
            caption="../workflow/report/subcategories.rst",
            category="{method}",
            subcategory="images",
        ),
    log:
        f"{LOGS}/plot_subcategories/{{method}}_round{{round}}.log",
    benchmark:
        f"{BENCH}/plot_subcategories/{{method}}_round{{round}}.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("plot_subcategories.py"),
        per_row=FIGURES["subcategory_images"],
    script:
        "../workflow/scripts/plot_subcategories.py"


rule plot_stage_miou:
    input:
        rules.summary.output.csv,
    output:
        report(
            f"{R}/figures/stage_miou.png",
            caption="../workflow/report/stage_miou.rst",
            category="all methods",
        ),
    log:
        f"{LOGS}/plot_stage_miou.log",
    benchmark:
        f"{BENCH}/plot_stage_miou.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("plot_stage_miou.py"),
        dataset=DATASET,
    script:
        "../workflow/scripts/plot_stage_miou.py"


rule plot_cam_comparison:
    input:
        split=split_csv(FIGURES["split"]),
        cams=expand(rules.make_cams.output[0], method=METHODS),
    output:
        report(
            f"{R}/figures/cam_comparison.png",
            caption="../workflow/report/cam_comparison.rst",
            category="all methods",
        ),
    log:
        f"{LOGS}/plot_cam_comparison.log",
    benchmark:
        f"{BENCH}/plot_cam_comparison.tsv"
    conda:
        "../envs/wsss.yaml"
    threads: 1
    params:
        code=script_code("plot_cam_comparison.py"),
        figures=FIGURES,
        methods=METHODS,
    script:
        "../workflow/scripts/plot_cam_comparison.py"
