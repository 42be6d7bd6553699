# wsss-pipeline: weakly supervised semantic segmentation as one Snakemake DAG.
# Usage: snakemake --cores 2                      (every configured method -> results/cam_summary.csv)
#        snakemake --cores 2 results/fmix/cam/miou.json

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/cam.smk"
include: "rules/subcategory.smk"
include: "rules/refine.smk"
include: "rules/report.smk"


rule all:
    input:
        f"{R}/cam_summary.csv",
    default_target: True
