"""Scoring folders of label PNGs (pseudo-labels, segmentation predictions) against a split's masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsss_lib.data.label_png import read_label_png
from wsss_lib.data.voc import class_columns, read_split_table
from wsss_lib.metrics import confusion_matrix, summarise


def score_label_dir(pred_dir: str | Path, split_csv: str) -> dict:
    """mIoU of ``pred_dir/{id}.png`` against the masks of the split's images (those without a mask
    are skipped); per-class IoU, pixel accuracy, split and number of images."""
    table = read_split_table(split_csv)
    names = ["background", *class_columns(table)]
    conf = np.zeros((len(names), len(names)), dtype=np.int64)
    evaluated = 0
    for image_id, mask_path in zip(table["id"], table["mask"]):
        if not mask_path:
            continue
        pred_path = Path(pred_dir) / f"{image_id}.png"
        if not pred_path.is_file():
            raise FileNotFoundError(f"no prediction for {image_id} of {split_csv}: {pred_path}")
        pred, gt = read_label_png(pred_path), read_label_png(mask_path)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction {pred_path} is {pred.shape}, mask {mask_path} is {gt.shape}")
        conf += confusion_matrix(gt, pred, len(names))
        evaluated += 1
    if evaluated == 0:
        raise ValueError(f"no image of {split_csv} has a ground-truth mask: nothing to evaluate")
    return {**summarise(conf, names), "split": Path(split_csv).stem, "n_images": evaluated}
