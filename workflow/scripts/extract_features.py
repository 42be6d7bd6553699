import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.subcategory import extract_features

extract_features(snakemake.input.model, snakemake.input.split, snakemake.output[0], kind=snakemake.params.kind,
                 device=snakemake.config["device"], threads=snakemake.threads,
                 batch_size=snakemake.params.batch_size, method=snakemake.wildcards.method,
                 round_index=int(snakemake.wildcards.round))
