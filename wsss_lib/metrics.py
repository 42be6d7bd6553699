"""Segmentation metrics from a confusion matrix (as torchvision's reference scripts compute them)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from wsss_lib.data.label_png import IGNORE_INDEX


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts, rows = ground truth, columns = prediction.

    Pixels whose ground truth is IGNORE_INDEX (or otherwise outside [0, n_classes)) are skipped.
    """
    gt = np.asarray(gt).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.size} pixels but prediction has {pred.size}")
    valid = (gt >= 0) & (gt < n_classes) & (gt != IGNORE_INDEX)
    if np.any((pred[valid] < 0) | (pred[valid] >= n_classes)):
        raise ValueError(f"prediction contains class indices outside [0, {n_classes})")
    flat = gt[valid] * n_classes + pred[valid]
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_from_confusion(conf: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN for a class absent from both ground truth and prediction."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def summarise(conf: np.ndarray, class_names: Sequence[str]) -> dict:
    """mIoU over the classes present in ground truth or prediction, with per-class IoU and pixel accuracy.

    Classes that never occur (NaN IoU) are reported as null and left out of the mean, as for
    small subsets of VOC where some classes are absent.
    """
    iou = iou_from_confusion(conf)
    if len(class_names) != len(iou):
        raise ValueError(f"{len(class_names)} class names for a {len(iou)}-class confusion matrix")
    present = ~np.isnan(iou)
    total = conf.sum()
    return {
        "miou": float(np.mean(iou[present])) if present.any() else float("nan"),
        "pixel_accuracy": float(np.trace(conf) / total) if total else float("nan"),
        "per_class_iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
        "classes_present": [name for name, p in zip(class_names, conf.sum(1) > 0) if p],
        "n_pixels": int(total),
    }
