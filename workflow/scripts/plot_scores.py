import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.figures import plot_scores

plot_scores(snakemake.input.method, snakemake.input.cam, snakemake.output.per_class, snakemake.output.thresholds,
            snakemake.wildcards.method)
