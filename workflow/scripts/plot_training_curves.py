import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.figures import plot_training, training_job_title

logs = [(training_job_title(name), path) for name, path in snakemake.input.items()]
plot_training(logs, snakemake.output[0], f"{snakemake.wildcards.method}: training")
