"""Cross-method tables built from the per-method result files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from wsss_lib.atomic import atomic_path


def read_result(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"result file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"result file {path} is not valid JSON: {err}") from err


def read_checked_result(path: str | os.PathLike, required: Sequence[str]) -> dict:
    """A result file that must hold every key of ``required``; the error names the file and the keys."""
    result = read_result(path)
    missing = [k for k in required if k not in result]
    if missing:
        raise ValueError(f"result file {path} lacks {missing}")
    return result


def method_results(methods: Sequence[str], result_paths: Sequence[str | os.PathLike],
                   required: Sequence[str]) -> list[tuple[str, dict]]:
    """(method, checked result) pairs, one result file per method."""
    if len(methods) != len(result_paths):
        raise ValueError(f"{len(methods)} methods but {len(result_paths)} result files")
    return [(method, read_checked_result(path, required)) for method, path in zip(methods, result_paths)]


def cam_summary(methods: Sequence[str], result_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per method: CAM mIoU at the configured threshold, and the best threshold of the sweep."""
    required = ("miou", "threshold", "best_miou", "best_threshold", "split", "n_images")
    return pd.DataFrame([
        {"method": method, "cam_miou": result["miou"], "threshold": result["threshold"],
         "best_miou": result["best_miou"], "best_threshold": result["best_threshold"],
         "split": result["split"], "n_images": result["n_images"]}
        for method, result in method_results(methods, result_paths, required)
    ])


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")


STAGES = ("cam", "pseudo_label", "segmentation")


def method_result(method: str, cam_path: str | os.PathLike, pseudo_path: str | os.PathLike,
                  seg_path: str | os.PathLike) -> dict:
    """results/{m}/miou.json: the three stages' mIoU, each with its split, threshold and image count."""
    required = ("miou", "per_class_iou", "split", "n_images")
    cam, pseudo, seg = (read_checked_result(path, required) for path in (cam_path, pseudo_path, seg_path))
    segmentation = {"miou": seg["miou"], "split": seg["split"], "n_images": seg["n_images"], "threshold": None,
                    "per_class_iou": seg["per_class_iou"], "init": seg.get("init"),
                    "train_split": seg.get("train_split")}
    if "crf" in seg:
        segmentation["miou_crf"] = seg["crf"]["miou"]
        segmentation["per_class_iou_crf"] = seg["crf"]["per_class_iou"]
    return {
        "method": method,
        "cam": {"miou": cam["miou"], "split": cam["split"], "n_images": cam["n_images"],
                "threshold": cam.get("threshold"), "best_miou": cam.get("best_miou"),
                "best_threshold": cam.get("best_threshold"), "per_class_iou": cam["per_class_iou"]},
        # the random walk's argmax needs no threshold; its background power is in the config
        "pseudo_label": {"miou": pseudo["miou"], "split": pseudo["split"], "n_images": pseudo["n_images"],
                         "threshold": None, "per_class_iou": pseudo["per_class_iou"]},
        "segmentation": segmentation,
    }


def write_json(result: dict, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2))


def summary_table(methods: Sequence[str], result_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per method, one mIoU column per stage (plus the CRF-refined segmentation where run)."""
    rows = []
    for method, result in method_results(methods, result_paths, STAGES):
        cam, pseudo, seg = (result[s] for s in STAGES)
        rows.append({"method": method, "cam_miou": cam["miou"], "cam_split": cam["split"],
                     "pseudo_label_miou": pseudo["miou"], "pseudo_label_split": pseudo["split"],
                     "seg_miou": seg["miou"], "seg_miou_crf": seg.get("miou_crf"), "seg_split": seg["split"],
                     "seg_init": seg.get("init")})
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame) -> str:
    """The summary as a GitHub-flavoured Markdown table (mIoU in percent, one decimal)."""
    header = ["method", "CAM", "pseudo-label", "segmentation", "segmentation + CRF"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def percent(value) -> str:
        return "-" if value is None or pd.isna(value) else f"{100 * value:.1f}"

    for row in table.itertuples(index=False):
        cells = [row.method, f"{percent(row.cam_miou)} ({row.cam_split})",
                 f"{percent(row.pseudo_label_miou)} ({row.pseudo_label_split})",
                 f"{percent(row.seg_miou)} ({row.seg_split})", percent(row.seg_miou_crf)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(table: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".md") as tmp:
        Path(tmp).write_text("mIoU (%) per method and stage; the split each was measured on in brackets.\n\n"
                             + markdown_table(table))
