import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.report import summary_table, write_csv, write_markdown

table = summary_table(snakemake.params.methods, snakemake.input)
write_csv(table, snakemake.output.csv)
write_markdown(table, snakemake.output.md)
print(table.to_string(index=False))
