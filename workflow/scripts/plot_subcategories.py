import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.figures import plot_subcategories

method, round_index = snakemake.wildcards.method, snakemake.wildcards.round
plot_subcategories(snakemake.input.clusters, snakemake.input.split, snakemake.output[0], snakemake.params.per_row,
                   f"{method}, round {round_index}: sub-categories found and their first images")
