from wsss_lib.jobs import start_job

start_job(snakemake.log[0], snakemake.output)

from wsss_lib.stages.data import fetch_weights

fetch_weights(snakemake.wildcards.backbone, snakemake.output[0])
