"""Read and write VOC-style palette PNG label maps (class index per pixel, 255 = ignore)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from wsss_lib.atomic import atomic_path
from wsss_lib.data.image_files import UNREADABLE, open_image, upright

IGNORE_INDEX = 255


def voc_palette() -> np.ndarray:
    """The standard PASCAL VOC colour map (256 x 3, uint8): bit-interleaved class index."""
    idx = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.uint8)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= (((idx >> channel) >> (3 * bit)) & 1).astype(np.uint8) << (7 - bit)
    return palette


def write_label_png(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write an (H, W) uint8 label map as a palette PNG, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label map for {path} must be 2-D, got shape {labels.shape}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(voc_palette().reshape(-1).tolist())
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a palette (or greyscale) label PNG as an (H, W) uint8 array of class indices, turned by its EXIF
    orientation if it has one, as the photos are (wsss_lib.data.image_files.upright)."""
    path = Path(path)
    with open_image(path, "label PNG") as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"label PNG {path} has mode {image.mode!r}; expected a palette or greyscale PNG")
        try:
            return np.asarray(upright(image), dtype=np.uint8).copy()
        except UNREADABLE as err:
            raise ValueError(f"cannot read label PNG {path}: {err}") from err
