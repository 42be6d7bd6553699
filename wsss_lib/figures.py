"""Figures people look at: training curves, image / CAM / label grids, per-class IoU, the CAM threshold sweep,
sub-category samples, and the cross-method charts.

Everything draws on matplotlib's object API (``Figure`` with the Agg canvas): no pyplot state, nothing shared
between figures, nothing that needs a display. Label maps use the PASCAL VOC palette (index 255, "ignore",
in its cream colour), so panels read like the VOC masks researchers know. Each figure is written atomically and
returned, for a caller (or a test) to inspect what it drew.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from wsss_lib.atomic import atomic_path
from wsss_lib.data.label_png import voc_palette

IGNORE = 255
DPI = 100
PANEL_INCHES = 1.9
PALETTE = voc_palette()
STAGE_NAMES = {"cam": "CAM", "pseudo_label": "pseudo-label", "segmentation": "segmentation"}


def save_figure(figure: Figure, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")


def _finish(figure: Figure, out: str | os.PathLike, title: str) -> Figure:
    if title:
        figure.suptitle(title)
    save_figure(figure, out)
    return figure


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) label indices -> (H, W, 3) uint8 in the VOC palette."""
    return PALETTE[labels]


def heat_overlay(image: np.ndarray, heat: np.ndarray, weight: float = 0.55) -> np.ndarray:
    """``heat`` in [0, 1] as a jet heat map blended over the image, as CAM papers draw them."""
    coloured = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    return ((1 - weight) * image.astype(np.float32) / 255 + weight * coloured).clip(0, 1)


def class_overlay(image: np.ndarray, cams: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Each pixel tinted with its strongest class's palette colour, as strongly as that class's CAM: one panel
    shows where every present class fires (the cross-method grid)."""
    grey = image.astype(np.float32).mean(-1, keepdims=True) / 255
    if len(keys) == 0:
        return np.repeat(grey, 3, -1)
    strongest = cams.argmax(0)
    strength = np.take_along_axis(cams, strongest[None], 0)[0].clip(0, 1)[..., None].astype(np.float32)
    tint = PALETTE[np.asarray(keys)[strongest] + 1].astype(np.float32) / 255
    return (1 - strength) * grey + strength * tint


def legend_handles(label_values: Sequence[int], class_names: Sequence[str]) -> list[Patch]:
    """Palette swatches for the labels shown; ``class_names`` excludes background (label 0)."""
    names = ["background", *class_names]
    handles = []
    for value in sorted(set(int(v) for v in label_values)):
        name = "ignored" if value == IGNORE else names[value] if value < len(names) else str(value)
        handles.append(Patch(facecolor=PALETTE[value] / 255, edgecolor="black", linewidth=0.5, label=name))
    return handles


def _blank(axis, text: str = "") -> None:
    axis.set_axis_off()
    if text:
        axis.text(0.5, 0.5, text, ha="center", va="center", fontsize=8, color="grey", transform=axis.transAxes)


def _panel(axis, picture: np.ndarray, title: str = "") -> None:
    axis.imshow(picture, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=8)


# ---------------------------------------------------------------------------------------------- training

def _loss_columns(log: pd.DataFrame) -> list[str]:
    return [c for c in log.columns if c.startswith("train_") and c != "train_labelled_fraction"]


def training_curves(logs: Sequence[tuple[str, pd.DataFrame]], out: str | os.PathLike, title: str = "") -> Figure:
    """One row per training job (classifier, sub-category rounds, AffinityNet, DeepLab): its loss terms, its
    learning rate, and its validation mAP / accuracy where it validated, against the epoch."""
    figure = Figure(figsize=(13, 2.6 * max(1, len(logs))), layout="constrained")
    axes = figure.subplots(max(1, len(logs)), 3, squeeze=False)
    for row, (name, log) in zip(axes, logs):
        epochs = log["epoch"]
        for column in _loss_columns(log):
            row[0].plot(epochs, log[column], label=column.removeprefix("train_"), marker=".")
        row[0].set_title(f"{name}: training loss", fontsize=9)
        row[0].legend(fontsize=7)
        row[1].plot(epochs, log["lr"], color="black")
        row[1].set_title(f"{name}: learning rate", fontsize=9)
        validation = [c for c in ("val_map", "val_accuracy") if c in log and log[c].notna().any()]
        if validation:
            for column in validation:
                measured = log[log[column].notna()]
                row[2].plot(measured["epoch"], measured[column], marker="o", label=column.removeprefix("val_"))
            row[2].set_ylim(0, 1)
            row[2].set_title(f"{name}: validation", fontsize=9)
            row[2].legend(fontsize=7)
        else:
            _blank(row[2], "no validation in this job")
        for axis in row if validation else row[:2]:
            axis.set_xlabel("epoch", fontsize=8)
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(figure, out, title)


# --------------------------------------------------------------------------------------------- examples

@dataclass
class Example:
    """One image's row of the example grid. ``cams``: (K, H, W) in [0, 1] for the classes ``keys`` (0-based,
    without background); label maps are (H, W) with 0 = background, 255 = ignored; None where the method
    made none for this image."""

    image_id: str
    image: np.ndarray
    truth: np.ndarray | None
    cams: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1)))
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    crf: np.ndarray | None = None
    pseudo: np.ndarray | None = None
    prediction: np.ndarray | None = None


LABEL_COLUMNS = (("crf", "confident CRF label"), ("pseudo", "pseudo-label"), ("prediction", "DeepLab prediction"),
                 ("truth", "ground truth"))


def example_grid(examples: Sequence[Example], class_names: Sequence[str], out: str | os.PathLike,
                 title: str = "") -> Figure:
    """Rows: images. Columns: the image, the CAM of each class it contains (a heat map over the image), the
    confident CRF label, the pseudo-label, DeepLab's prediction and the ground truth; a palette legend."""
    n_cams = max([len(e.keys) for e in examples] + [1])
    n_columns = 1 + n_cams + len(LABEL_COLUMNS)
    figure = Figure(figsize=(PANEL_INCHES * n_columns, PANEL_INCHES * len(examples) + 0.8), layout="constrained")
    axes = figure.subplots(len(examples), n_columns, squeeze=False)
    shown: set[int] = set()
    for row, example in zip(axes, examples):
        _panel(row[0], example.image, example.image_id)
        for column in range(n_cams):
            axis = row[1 + column]
            if column < len(example.keys):
                key = int(example.keys[column])
                _panel(axis, heat_overlay(example.image, example.cams[column]), f"CAM: {class_names[key]}")
            else:
                _blank(axis)
        for axis, (attribute, name) in zip(row[1 + n_cams:], LABEL_COLUMNS):
            labels = getattr(example, attribute)
            if labels is None:
                _blank(axis, f"no {name}")
                continue
            _panel(axis, colour_labels(labels), name)
            shown.update(np.unique(labels).tolist())
    figure.legend(handles=legend_handles(shown, class_names), loc="outside lower center",
                  ncol=min(8, max(1, len(shown))), fontsize=8)
    return _finish(figure, out, title)


# ------------------------------------------------------------------------------------------------ scores

def per_class_iou_bars(result: Mapping, out: str | os.PathLike, title: str = "") -> Figure:
    """Grouped bars: each class present in the ground truth, the IoU of the CAMs, the pseudo-labels and the
    segmentation (each on its own split, named in the legend). ``result`` is a results/{m}/miou.json."""
    stages = [s for s in STAGE_NAMES if s in result]
    classes = [c for c in result[stages[0]]["per_class_iou"]
               if any(result[s]["per_class_iou"].get(c) is not None for s in stages)]
    figure = Figure(figsize=(max(6.0, 0.55 * len(classes) + 2), 3.6), layout="constrained")
    axis = figure.subplots()
    width = 0.8 / len(stages)
    x = np.arange(len(classes))
    for i, stage in enumerate(stages):
        values = [result[stage]["per_class_iou"].get(c) for c in classes]
        heights = [np.nan if v is None else v for v in values]
        label = f"{STAGE_NAMES[stage]} ({result[stage]['split']}): {100 * result[stage]['miou']:.1f}"
        axis.bar(x + (i - (len(stages) - 1) / 2) * width, heights, width, label=label)
    axis.set_xticks(x, classes, rotation=45, ha="right", fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("IoU")
    axis.legend(fontsize=8, title="stage (split): mIoU %", title_fontsize=8)
    axis.set_title(title or "per-class IoU", fontsize=10)
    save_figure(figure, out)
    return figure


def threshold_sweep(cam_result: Mapping, out: str | os.PathLike, title: str = "") -> Figure:
    """CAM mIoU against the background threshold (results/{m}/cam/miou.json's sweep), the configured threshold
    and the best one marked, and the all-background prediction as the floor a CAM must beat."""
    thresholds = np.array([float(t) for t in cam_result["sweep"]])
    scores = np.array(list(cam_result["sweep"].values()))
    order = np.argsort(thresholds)
    figure = Figure(figsize=(5.5, 3.6), layout="constrained")
    axis = figure.subplots()
    axis.plot(thresholds[order], scores[order], marker="o", color="black", label="CAM mIoU")
    axis.axvline(cam_result["threshold"], color="tab:blue", linestyle="--",
                 label=f"configured {cam_result['threshold']:g}: {100 * cam_result['miou']:.1f}")
    axis.axvline(cam_result["best_threshold"], color="tab:green", linestyle=":",
                 label=f"best {cam_result['best_threshold']:g}: {100 * cam_result['best_miou']:.1f}")
    if "all_background_miou" in cam_result:
        axis.axhline(cam_result["all_background_miou"], color="grey", linewidth=0.8,
                     label=f"all background: {100 * cam_result['all_background_miou']:.1f}")
    axis.set_xlabel("background threshold")
    axis.set_ylabel(f"mIoU ({cam_result['split']}, {cam_result['n_images']} images)")
    axis.legend(fontsize=8)
    axis.set_title(title or "CAM threshold sweep", fontsize=10)
    save_figure(figure, out)
    return figure


# --------------------------------------------------------------------------------------------- clusters

def subcategory_grid(clusters: pd.DataFrame, images: Mapping[str, np.ndarray], out: str | os.PathLike,
                     per_row: int, title: str = "", cell: int = 64) -> Figure:
    """One row per sub-category (a column of clusters.csv): its size and its first ``per_row`` images, so a
    reader sees what the clustering grouped together. ``images`` maps id -> thumbnail (at most ``cell`` px a side).

    The thumbnails are pasted into one mosaic drawn as a single image: SC-CAM on VOC finds ~200 sub-categories,
    and one axes per thumbnail (over a thousand) takes matplotlib minutes to lay out."""
    columns = [c for c in clusters.columns if c != "id"]
    gap = 4
    step = cell + gap
    mosaic = np.full((max(1, len(columns)) * step, per_row * step, 3), 255, np.uint8)
    labels = []
    for row, column in enumerate(columns):
        members = clusters.loc[clusters[column] == 1, "id"].tolist()
        labels.append(f"{column} ({len(members)} images)")
        for slot, image_id in enumerate(members[:per_row]):
            thumbnail = images[image_id][:cell, :cell]
            top, left = row * step + (cell - thumbnail.shape[0]) // 2, slot * step + (cell - thumbnail.shape[1]) // 2
            mosaic[top:top + thumbnail.shape[0], left:left + thumbnail.shape[1]] = thumbnail
    figure = Figure(figsize=(per_row * step / DPI + 2.2, mosaic.shape[0] / DPI + 0.6), layout="constrained")
    axis = figure.subplots()
    axis.imshow(mosaic, interpolation="nearest")
    axis.set_yticks([row * step + cell / 2 for row in range(len(columns))], labels, fontsize=8)
    axis.set_xticks([])
    for side in axis.spines.values():
        side.set_visible(False)
    return _finish(figure, out, title)


def stage_bars(summary: pd.DataFrame, out: str | os.PathLike, title: str = "") -> Figure:
    """Grouped bars: per method, the mIoU of its CAMs, pseudo-labels and segmentation (and with CRF where run);
    ``summary`` is results/summary.csv."""
    columns = [("cam_miou", "CAM"), ("pseudo_label_miou", "pseudo-label"), ("seg_miou", "segmentation"),
               ("seg_miou_crf", "segmentation + CRF")]
    columns = [(c, name) for c, name in columns if c in summary and summary[c].notna().any()]
    figure = Figure(figsize=(max(6.0, 1.1 * len(summary) + 2), 3.8), layout="constrained")
    axis = figure.subplots()
    width = 0.8 / len(columns)
    x = np.arange(len(summary))
    for i, (column, name) in enumerate(columns):
        bars = axis.bar(x + (i - (len(columns) - 1) / 2) * width, summary[column], width, label=name)
        axis.bar_label(bars, labels=[f"{100 * v:.0f}" if not math.isnan(v) else "" for v in summary[column]],
                       fontsize=6)
    axis.set_xticks(x, summary["method"], rotation=30, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("mIoU")
    axis.legend(fontsize=8, ncol=len(columns))
    axis.set_title(title or "mIoU per method and stage", fontsize=10)
    save_figure(figure, out)
    return figure


def cam_comparison_grid(examples: Mapping[str, Sequence[Example]], class_names: Sequence[str],
                        out: str | os.PathLike, title: str = "") -> Figure:
    """Rows: the same images; columns: the image with its ground truth beside it, then every method's CAMs
    (each pixel tinted with its strongest class, as strongly as its CAM). ``examples``: method -> rows."""
    methods = list(examples)
    rows = examples[methods[0]]
    figure = Figure(figsize=(PANEL_INCHES * (len(methods) + 2), PANEL_INCHES * len(rows) + 0.8),
                    layout="constrained")
    axes = figure.subplots(len(rows), len(methods) + 2, squeeze=False)
    shown: set[int] = set()
    for index, row in enumerate(axes):
        first = rows[index]
        _panel(row[0], first.image, first.image_id)
        if first.truth is None:
            _blank(row[1], "no mask")
        else:
            _panel(row[1], colour_labels(first.truth), "ground truth")
            shown.update(np.unique(first.truth).tolist())
        for axis, method in zip(row[2:], methods):
            example = examples[method][index]
            _panel(axis, class_overlay(example.image, example.cams, example.keys), method)
            shown.update((np.asarray(example.keys) + 1).tolist())
    figure.legend(handles=legend_handles(shown, class_names), loc="outside lower center",
                  ncol=min(8, max(1, len(shown))), fontsize=8)
    return _finish(figure, out, title)
