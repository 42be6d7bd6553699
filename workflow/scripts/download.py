from wsss_lib.jobs import start_job

start_job(snakemake.log[0], snakemake.output)

from wsss_lib.data.download import download

download(snakemake.params.url, snakemake.output[0], checksum=snakemake.params.md5, algorithm="md5")
