import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.subcategory import cluster_features

info = cluster_features(snakemake.input.features, snakemake.input.split, snakemake.output.csv,
                        snakemake.output.json, snakemake.params.clustering)
print(f"{info['total']} sub-categories: {info['per_class']}")
