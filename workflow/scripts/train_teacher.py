import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.stages.subcategory import train_teacher

train_teacher(snakemake.input.train, snakemake.input.val, snakemake.output.model, snakemake.output.log_csv,
              snakemake.params.teacher, device=snakemake.config["device"], threads=snakemake.threads,
              weights_file=snakemake.input.weights or None, resume_path=snakemake.params.resume,
              method=snakemake.wildcards.method)
