import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.data.synthetic import generate_synthetic

generate_synthetic(snakemake.output[0], **snakemake.params.spec)
