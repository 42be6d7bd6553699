"""Evaluation stage: CAM, pseudo-label and segmentation mIoU from the stored outputs of the other stages.

These are small jobs, one of each per method, each a fresh Python process: this module imports no torch or
torchvision (~4 s of a ~5 s job on 2 cores), so the jobs cost about a second each.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from wsss_lib.data.label_png import read_label_png
from wsss_lib.data.voc import read_split_table
from wsss_lib.evaluation import score_label_dir, strongest_class
from wsss_lib.metrics import confusion_matrix, summarise
from wsss_lib.progress import track
from wsss_lib.report import write_json
from wsss_lib.store import StoreReader


def threshold_grid(start: float, stop: float, step: float) -> list[float]:
    return [round(t, 4) for t in np.arange(start, stop + step / 2, step)]


def eval_cams(store_path: str, split_csv: str, json_out: str, hp: Mapping[str, Any]) -> dict:
    """CAM mIoU at the configured background threshold, plus a threshold sweep (one pass over images)."""
    opts = hp["eval_cams"]
    sweep = threshold_grid(*opts["sweep"])
    thresholds = sorted(set(sweep) | {opts["threshold"]})
    started = time.time()
    with StoreReader(store_path) as store:
        class_names = list(store.attrs["class_names"])
        table = read_split_table(split_csv, class_names)
        names = ["background", *class_names]
        n = len(names)
        confusions = {t: np.zeros((n, n), dtype=np.int64) for t in thresholds}
        evaluated = 0
        for image_id, mask_path in track(zip(table["id"], table["mask"]), "eval_cams", len(table)):
            if not mask_path:
                continue  # no pixel ground truth (XML-only image): nothing to score
            gt = read_label_png(mask_path)
            entry = store[image_id]
            cams = entry["high_res"].astype(np.float32)
            if cams.shape[-2:] != gt.shape:
                raise ValueError(f"CAM of {image_id} in {store_path} is {cams.shape[-2:]}, "
                                 f"mask {mask_path} is {gt.shape}")
            label, peak = strongest_class(cams, entry["keys"])
            for t in thresholds:
                confusions[t] += confusion_matrix(gt, np.where(peak > t, label, 0), n)
            evaluated += 1
    if evaluated == 0:
        raise ValueError(f"no image of {split_csv} has a ground-truth mask: cannot evaluate CAMs")
    by_threshold = {t: summarise(confusions[t], names) for t in thresholds}
    best = max(sweep, key=lambda t: by_threshold[t]["miou"])
    result = {
        **by_threshold[opts["threshold"]],
        "threshold": opts["threshold"],
        "split": Path(split_csv).stem,
        "n_images": evaluated,
        "sweep": {str(t): by_threshold[t]["miou"] for t in sweep},
        "best_threshold": best,
        "best_miou": by_threshold[best]["miou"],
        "all_background_miou": summarise(_all_background(confusions[opts["threshold"]]), names)["miou"],
        "seconds": time.time() - started,
    }
    write_json(result, json_out)
    return result


def _all_background(conf: np.ndarray) -> np.ndarray:
    """The confusion matrix of predicting background everywhere, from the ground-truth row sums."""
    out = np.zeros_like(conf)
    out[:, 0] = conf.sum(1)
    return out


def eval_pseudo_labels(pseudo_dir: str, split_csv: str, json_out: str) -> dict:
    """mIoU of the pseudo-labels against the split's masks (images without a mask are skipped)."""
    result = score_label_dir(pseudo_dir, split_csv)
    write_json(result, json_out)
    return result


def eval_segmentation(pred_dir: str, split_csv: str, model_path: str, json_out: str) -> dict:
    """results/{m}/seg/miou.json: mIoU without CRF, and with it where infer_deeplab wrote CRF predictions."""
    # torch only here, for the model's metadata: the other evaluation jobs start without it (~2 s less each)
    from wsss_lib.models.checkpoint import read_checkpoint

    _, meta = read_checkpoint(model_path, "DeepLab model", architecture="deeplab")
    result = {**score_label_dir(Path(pred_dir) / "plain", split_csv),
              "init": meta["init"], "head": meta["build_args"]["head"], "backbone": meta["build_args"]["backbone"],
              "iterations": meta["iterations"], "train_split": meta["train_split"],
              "n_train_images": meta["n_train_images"]}
    if (Path(pred_dir) / "crf").is_dir():
        with_crf = score_label_dir(Path(pred_dir) / "crf", split_csv)
        result["crf"] = {k: with_crf[k] for k in ("miou", "per_class_iou", "pixel_accuracy")}
    write_json(result, json_out)
    return result
