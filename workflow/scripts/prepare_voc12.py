import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.data import prepare_voc12

prepare_voc12(snakemake.input.voc, snakemake.input.sbd, snakemake.output[0])
