import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.figures import plot_examples

plot_examples(snakemake.input.split, snakemake.params.figures, snakemake.input.cams, snakemake.input.labels,
              snakemake.input.pseudo, snakemake.input.seg_model, snakemake.params.hp, snakemake.output[0],
              snakemake.wildcards.method)
