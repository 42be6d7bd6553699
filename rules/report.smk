# Reports: tables across methods.


# Seconds of work each: on a cluster they run on the submit host instead of waiting in the queue as jobs.
localrules:
    cam_summary,
    summary,


rule cam_summary:
    input:
        expand(f"{R}/{{method}}/cam/miou.json", method=METHODS),
    output:
        f"{R}/cam_summary.csv",
    params:
        code=script_code("cam_summary.py"),
        methods=METHODS,
    conda:
        "../envs/wsss.yaml"
    log:
        f"{LOGS}/cam_summary.log",
    benchmark:
        f"{BENCH}/cam_summary.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/cam_summary.py"


rule summary:
    input:
        expand(f"{R}/{{method}}/miou.json", method=METHODS),
    output:
        csv=f"{R}/summary.csv",
        md=f"{R}/summary.md",
    params:
        code=script_code("summary.py"),
        methods=METHODS,
    conda:
        "../envs/wsss.yaml"
    log:
        f"{LOGS}/summary.log",
    benchmark:
        f"{BENCH}/summary.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../workflow/scripts/summary.py"
