import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.refine import train_affinity
from wsss_lib.training import ResumeSpec

resume = ResumeSpec.for_job(snakemake.params.resume, dict(snakemake.params.items()), snakemake.input,
                            snakemake.config["resume"], per="epochs")
train_affinity(snakemake.input.labels, snakemake.input.split, snakemake.output.model, snakemake.output.log_csv,
               snakemake.params.hp, init_model=snakemake.input.get("init"), weights_file=snakemake.input.get("weights"),
               device=snakemake.config["device"], threads=snakemake.threads, resume=resume,
               method=snakemake.wildcards.method)
