import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.report import cam_summary, write_csv

table = cam_summary(snakemake.params.methods, snakemake.input)
write_csv(table, snakemake.output[0])
print(table.to_string(index=False))
