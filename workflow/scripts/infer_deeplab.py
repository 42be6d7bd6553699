import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.segment import infer_deeplab

infer_deeplab(snakemake.input.model, snakemake.input.split, snakemake.output[0], snakemake.params.hp,
              device=snakemake.config["device"], threads=snakemake.threads)
