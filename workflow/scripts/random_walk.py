import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.refine import random_walk

random_walk(snakemake.input.model, snakemake.input.cams, snakemake.input.split, snakemake.output[0],
            snakemake.params.hp, device=snakemake.config["device"], threads=snakemake.threads)
