import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.refine import crf_labels

crf_labels(snakemake.input.cams, snakemake.input.split, snakemake.output[0], snakemake.params.hp,
           threads=snakemake.threads, method=snakemake.wildcards.method)
