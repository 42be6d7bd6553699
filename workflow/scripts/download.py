import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.data.download import download

download(snakemake.params.url, snakemake.output[0], checksum=snakemake.params.md5, algorithm="md5")
