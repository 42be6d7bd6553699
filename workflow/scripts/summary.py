import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.report import published_comparison, summary_table, write_csv, write_html, write_markdown

methods, results = snakemake.params.methods, snakemake.input.results
table = summary_table(methods, results)
comparison = published_comparison(methods, results, snakemake.params.published, snakemake.params.dataset)
write_csv(table, snakemake.output.csv)
write_markdown(table, snakemake.output.md, comparison)
write_html(table, comparison, snakemake.output.html)
print(table.to_string(index=False))
