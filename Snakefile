# wsss-pipeline: weakly supervised semantic segmentation as one Snakemake DAG.
# Usage: snakemake --cores 2                      (every method, end to end -> results/summary.csv)
#        snakemake --cores 2 results/fmix/miou.json     (one method: CAM, pseudo-label and segmentation mIoU)

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/cam.smk"
include: "rules/subcategory.smk"
include: "rules/refine.smk"
include: "rules/segment.smk"
include: "rules/report.smk"
# last: it reads the other rules' outputs
include: "rules/guards.smk"


rule all:
    default_target: True
    input:
        f"{R}/summary.csv",
        f"{R}/cam_summary.csv",
        f"{R}/figures/stage_miou.png",
        f"{R}/figures/cam_comparison.png",
        [figure for method in METHODS for figure in method_figures(method)],
