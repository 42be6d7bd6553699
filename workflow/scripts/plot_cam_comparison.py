import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.figures import plot_cam_comparison

plot_cam_comparison(snakemake.input.split, snakemake.params.figures,
                    dict(zip(snakemake.params.methods, snakemake.input.cams)), snakemake.output[0])
