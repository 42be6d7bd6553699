import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.data.voc import find_voc_root
from wsss_lib.stages.data import prepare_split

n = prepare_split(find_voc_root(snakemake.params.root), snakemake.wildcards.split, snakemake.params.class_names,
                  snakemake.output[0])
print(f"{snakemake.wildcards.split}: {n} images")
