import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.report import method_result, write_json

result = method_result(snakemake.wildcards.method, snakemake.input.cam, snakemake.input.pseudo, snakemake.input.seg)
write_json(result, snakemake.output[0])
print({stage: result[stage]["miou"] for stage in ("cam", "pseudo_label", "segmentation")})
