import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.evaluate import eval_cams

result = eval_cams(snakemake.input.cams, snakemake.input.split, snakemake.output[0], snakemake.params.hp)
print(f"CAM mIoU {result['miou']:.4f} at threshold {result['threshold']} on {result['n_images']} images; "
      f"best {result['best_miou']:.4f} at {result['best_threshold']}")
