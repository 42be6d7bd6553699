import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.data import fetch_weights

fetch_weights(snakemake.wildcards.backbone, snakemake.output[0])
