import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.evaluate import eval_pseudo_labels

eval_pseudo_labels(snakemake.input.pseudo, snakemake.input.split, snakemake.output[0])
