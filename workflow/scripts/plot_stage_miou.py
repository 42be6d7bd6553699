import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.figures import plot_stage_miou

plot_stage_miou(snakemake.input[0], snakemake.output[0], snakemake.params.dataset)
