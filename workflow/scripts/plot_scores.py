from wsss_lib.jobs import start_job

start_job(snakemake.log[0], snakemake.output)

from wsss_lib.stages.figures import plot_scores

plot_scores(snakemake.input.method, snakemake.input.cam, snakemake.output.per_class, snakemake.output.thresholds,
            snakemake.wildcards.method)
