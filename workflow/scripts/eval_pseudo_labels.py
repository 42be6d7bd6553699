from wsss_lib.jobs import start_job

start_job(snakemake.log[0], snakemake.output)

from wsss_lib.stages.evaluate import eval_pseudo_labels

eval_pseudo_labels(snakemake.input.pseudo, snakemake.input.split, snakemake.output[0])
