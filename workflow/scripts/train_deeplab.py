import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.stages.segment import train_deeplab

train_deeplab(snakemake.input.pseudo, snakemake.input.split, snakemake.output.model, snakemake.output.log_csv,
              snakemake.params.hp, weights_file=snakemake.input.get("weights"), device=snakemake.config["device"],
              threads=snakemake.threads, resume_path=snakemake.params.resume, method=snakemake.wildcards.method)
