# wsss-pipeline: weakly supervised semantic segmentation as one Snakemake DAG.
# Usage: snakemake --cores 2                      (every configured method)
#        snakemake --cores 2 results/baseline/cam/miou.json

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/cam.smk"


rule all:
    input:
        expand(f"{R}/{{method}}/cam/miou.json", method=METHODS),
    default_target: True
