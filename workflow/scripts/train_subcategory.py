import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.config import job_fingerprint
from wsss_lib.stages.subcategory import train_subcategory
from wsss_lib.training import ResumeSpec

resume = ResumeSpec(snakemake.params.resume, job_fingerprint(dict(snakemake.params.items()), snakemake.input),
                    every_epochs=snakemake.config["resume"]["every_epochs"])
train_subcategory(snakemake.input.train, snakemake.input.val, snakemake.input.clusters,
                  snakemake.input.clusters_json, snakemake.input.init, snakemake.output.model,
                  snakemake.output.log_csv, snakemake.params.hp, n_subcategories=snakemake.params.n_subcategories,
                  device=snakemake.config["device"], threads=snakemake.threads, resume=resume,
                  method=snakemake.wildcards.method, round_index=int(snakemake.wildcards.round))
