import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)

from wsss_lib.jobs import start_job

start_job(snakemake.output)

from wsss_lib.stages.evaluate import eval_segmentation

result = eval_segmentation(snakemake.input.pred, snakemake.input.split, snakemake.input.model, snakemake.output[0])
print(f"segmentation mIoU {result['miou']:.4f} on {result['n_images']} {result['split']} images"
      + (f"; with CRF {result['crf']['miou']:.4f}" if "crf" in result else ""))
