"""Class names of the datasets, importable without numpy or torch.

The Snakefile needs them to plan the DAG (split-table columns are rule params); keeping them here
lets `snakemake -n` run on a login node that has Snakemake but not the GPU stack.
"""

from __future__ import annotations

#: PASCAL VOC 2012's 20 foreground classes, in label order (label c+1 is VOC_CLASSES[c]; 0 is background).
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)

#: The synthetic dataset's classes, named after the shape of their mark (wsss_lib.data.synthetic draws them).
SYNTHETIC_CLASSES = (
    "disc", "cross", "triangle", "square", "ring", "star", "diamond", "hbar", "vbar", "saltire",
    "crescent", "frame", "hourglass", "tee", "ell", "chevron", "halfdisc", "twodots", "stripes", "bowtie",
)


def synthetic_class_names(n_classes: int) -> list[str]:
    """The first ``n_classes`` synthetic class names: ``["disc", "cross", ...]``."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or not 1 <= n_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"n_classes must be an integer in [1, {len(SYNTHETIC_CLASSES)}], got {n_classes!r}")
    return list(SYNTHETIC_CLASSES[:n_classes])


def dataset_class_names(dataset: str, n_synthetic_classes: int | None = None) -> list[str]:
    """Foreground class names of a configured dataset (``synthetic`` takes its class count)."""
    if dataset == "voc12":
        return list(VOC_CLASSES)
    if dataset == "synthetic":
        return synthetic_class_names(n_synthetic_classes)
    raise ValueError(f"unknown dataset {dataset!r}; choose synthetic or voc12")
