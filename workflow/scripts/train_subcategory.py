import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.subcategory import train_subcategory
from wsss_lib.training import ResumeSpec

resume = ResumeSpec.for_job(snakemake.params.resume, dict(snakemake.params.items()), snakemake.input,
                            snakemake.config["resume"], per="epochs")
train_subcategory(snakemake.input.train, snakemake.input.val, snakemake.input.clusters,
                  snakemake.input.clusters_json, snakemake.input.get("init"), snakemake.output.model,
                  snakemake.output.log_csv, snakemake.params.hp, n_subcategories=snakemake.params.n_subcategories,
                  weights_file=snakemake.input.get("weights"), device=snakemake.config["device"],
                  threads=snakemake.threads, resume=resume, method=snakemake.wildcards.method,
                  round_index=int(snakemake.wildcards.round))
