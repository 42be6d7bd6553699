"""Scoring CAMs and folders of label PNGs (pseudo-labels, segmentation predictions) against a split's masks.

numpy only: the evaluation jobs start without torch (wsss_lib/stages/evaluate.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsss_lib.data.ids import id_path
from wsss_lib.data.label_png import read_label_png
from wsss_lib.data.voc import class_columns, read_split_table
from wsss_lib.metrics import confusion_matrix, summarise
from wsss_lib.progress import track


def score_label_dir(pred_dir: str | Path, split_csv: str) -> dict:
    """mIoU of ``pred_dir/{id}.png`` against the masks of the split's images (those without a mask
    are skipped); per-class IoU, pixel accuracy, split and number of images."""
    table = read_split_table(split_csv)
    names = ["background", *class_columns(table)]
    conf = np.zeros((len(names), len(names)), dtype=np.int64)
    evaluated = 0
    for image_id, mask_path in track(zip(table["id"], table["mask"]), f"scoring {Path(pred_dir).name}", len(table)):
        if not mask_path:
            continue
        pred_path = id_path(pred_dir, image_id, ".png", f"split table {split_csv}")
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


def strongest_class(cams: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the strongest present class (labelled ``key + 1``) and its normalised score.

    ``cams`` (k, H, W) are the maps of the foreground classes ``keys`` (0-based class ids).
    """
    if len(keys) == 0:
        zeros = np.zeros(cams.shape[-2:], dtype=np.float32)
        return zeros.astype(np.uint8), zeros
    best = cams.argmax(0)
    peak = np.take_along_axis(cams, best[None], 0)[0]
    return (np.asarray(keys)[best] + 1).astype(np.uint8), peak


def cams_to_labels(cams: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """Pixel labels: background where no class exceeds ``threshold``, else the strongest class."""
    label, peak = strongest_class(cams, keys)
    return np.where(peak > threshold, label, 0).astype(np.uint8)
