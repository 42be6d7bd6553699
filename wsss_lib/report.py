"""Cross-method tables built from the per-method result files."""

from __future__ import annotations

import json
import os
from html import escape
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from wsss_lib.atomic import atomic_path
from wsss_lib.config import non_finite_values


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
    """``result`` as strict JSON, which has no NaN or infinity (Python's json writes a bare NaN that strict parsers
    refuse). A score undefined for want of pixels is null where it is computed (metrics.summarise's IoU of a class
    absent from ground truth and prediction); any other non-finite number is an error naming the file and key."""
    bad = list(non_finite_values(result))
    if bad:
        raise ValueError(f"not writing {path}: " + ", ".join(f"{key} is {value}" for key, value in bad)
                         + " (JSON has no NaN or infinity)")
    with atomic_path(path, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2, allow_nan=False))


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


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The summary as people read it: mIoU in percent, one decimal, each with the split it was measured on."""

    def percent(value) -> str:
        return "-" if value is None or pd.isna(value) else f"{100 * value:.1f}"

    rows = [[row.method, f"{percent(row.cam_miou)} ({row.cam_split})",
             f"{percent(row.pseudo_label_miou)} ({row.pseudo_label_split})",
             f"{percent(row.seg_miou)} ({row.seg_split})", percent(row.seg_miou_crf)]
            for row in table.itertuples(index=False)]
    return pd.DataFrame(rows, columns=["method", "CAM", "pseudo-label", "segmentation", "segmentation + CRF"])


def _markdown_rows(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def markdown_table(table: pd.DataFrame) -> str:
    """The summary as a GitHub-flavoured Markdown table."""
    return _markdown_rows(display_table(table))


# (stage in results/{m}/miou.json, key of the method's `published` block in config.yaml, what it measures)
PUBLISHED_STAGES = (("cam", "cam_train", "CAM"), ("pseudo_label", "pseudo_train", "pseudo-label"),
                    ("segmentation", "seg_val", "segmentation"))
COMPARISON_COLUMNS = ["method", "stage", "published, full VOC 2012", "source", "this run"]


def published_comparison(methods: Sequence[str], result_paths: Sequence[str | os.PathLike],
                         published: Mapping[str, Mapping | None], dataset: str) -> pd.DataFrame:
    """Each stage's published VOC 2012 mIoU (%, config.yaml ``published``, with its source) beside this run's,
    each labelled with what it was measured on, so that neither is read as the other."""
    rows = []
    for method, result in method_results(methods, result_paths, STAGES):
        cited = published.get(method) or {}
        for stage, key, name in PUBLISHED_STAGES:
            ours = result[stage]
            measured_on = key.rsplit("_", 1)[1]
            rows.append([method, name,
                         f"{cited[key]:.1f} ({measured_on}; trained on {cited['train_set']})" if key in cited else "-",
                         cited.get("source", "-") if key in cited else "-",
                         f"{100 * ours['miou']:.1f} ({dataset} {ours['split']}, {ours['n_images']} images)"])
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


SUMMARY_CAPTION = "mIoU (%) per method and stage; the split each was measured on in brackets."
COMPARISON_HEADING = "This run beside the published figures"
COMPARISON_CAPTION = ("Published: PASCAL VOC 2012, full dataset, as the source reports it. This run: the dataset and "
                      "images named. Different data and budgets: read the two columns side by side, not as one "
                      "ranking.")


def write_markdown(table: pd.DataFrame, path: str | os.PathLike, comparison: pd.DataFrame | None = None) -> None:
    text = f"{SUMMARY_CAPTION}\n\n{markdown_table(table)}"
    if comparison is not None:
        text += f"\n## {COMPARISON_HEADING}\n\n{COMPARISON_CAPTION}\n\n{_markdown_rows(comparison)}"
    with atomic_path(path, suffix=".md") as tmp:
        Path(tmp).write_text(text)


def write_html(table: pd.DataFrame, comparison: pd.DataFrame, path: str | os.PathLike) -> None:
    """summary.md's two tables as one HTML page: what the Snakemake report shows (it renders HTML, not CSV)."""
    style = ("body{font-family:sans-serif;margin:1em} table{border-collapse:collapse;margin-bottom:1.5em}"
             "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}")
    html = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>summary</title><style>{style}</style></head>"
            f"<body><p>{escape(SUMMARY_CAPTION)}</p>{display_table(table).to_html(index=False, escape=True)}"
            f"<h2>{escape(COMPARISON_HEADING)}</h2><p>{escape(COMPARISON_CAPTION)}</p>"
            f"{comparison.to_html(index=False, escape=True)}</body></html>\n")
    with atomic_path(path, suffix=".html") as tmp:
        Path(tmp).write_text(html)
