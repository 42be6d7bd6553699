import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.segment import train_deeplab
from wsss_lib.training import ResumeSpec

# DeepLab counts iterations, so its state is saved every n iterations (mid-epoch), not per epoch.
resume = ResumeSpec.for_job(snakemake.params.resume, dict(snakemake.params.items()), snakemake.input,
                            snakemake.config["resume"], per="iterations")
train_deeplab(snakemake.input.pseudo, snakemake.input.split, snakemake.output.model, snakemake.output.log_csv,
              snakemake.params.hp, weights_file=snakemake.input.get("weights"),
              init_model=snakemake.input.get("init"), device=snakemake.config["device"],
              threads=snakemake.threads, resume=resume, method=snakemake.wildcards.method)
