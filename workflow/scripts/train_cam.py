import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.cam import train_cam
from wsss_lib.training import ResumeSpec

resume = ResumeSpec.for_job(snakemake.params.resume, dict(snakemake.params.items()), snakemake.input,
                            snakemake.config["resume"], per="epochs")
train_cam(
    snakemake.input.train, snakemake.input.val, snakemake.output.model, snakemake.output.log_csv,
    snakemake.params.hp, device=snakemake.config["device"], threads=snakemake.threads,
    weights_file=snakemake.input.weights or None, resume=resume, method=snakemake.wildcards.method,
)
