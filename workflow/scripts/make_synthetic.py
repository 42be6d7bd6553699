from wsss_lib.jobs import start_job

start_job(snakemake.log[0], snakemake.output)

from wsss_lib.data.synthetic import generate_synthetic

generate_synthetic(snakemake.output[0], **snakemake.params.spec)
