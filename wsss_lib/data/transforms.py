"""Training and inference transforms for classification on VOC-layout images.

The augmentation follows PSA / IRN (Ahn & Kwak CVPR 2018; Ahn et al. CVPR 2019): random resize of the
long side, horizontal flip, colour jitter, normalisation, random crop padded with zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import ColorJitter


def normalise_array(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32, (x - mean) / std in 0-255 units.

    numpy rather than torch: data loading runs many tiny ops, and torch's intra-op thread pool
    costs milliseconds per op on small tensors when more than one thread is configured.
    """
    chw = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
    return (chw - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]


def normalise(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 tensor, (x - mean) / std in 0-255 units."""
    return torch.from_numpy(np.ascontiguousarray(normalise_array(image, mean, std)))


def resize_long(image: Image.Image, long_side: int) -> Image.Image:
    width, height = image.size
    scale = long_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.BILINEAR)


def random_crop(array: np.ndarray, crop: int, generator: torch.Generator) -> np.ndarray:
    """A crop x crop window of a (C, H, W) array; a side shorter than ``crop`` lands at a random offset in zeros."""
    channels, height, width = array.shape
    out = np.zeros((channels, crop, crop), dtype=array.dtype)

    def offsets(size: int) -> tuple[int, int]:
        slack = abs(size - crop)
        shift = int(torch.randint(slack + 1, (1,), generator=generator))
        return (shift, 0) if size > crop else (0, shift)  # (offset into source, offset into canvas)

    src_y, dst_y = offsets(height)
    src_x, dst_x = offsets(width)
    h, w = min(height, crop), min(width, crop)
    out[:, dst_y : dst_y + h, dst_x : dst_x + w] = array[:, src_y : src_y + h, src_x : src_x + w]
    return out


@dataclass(frozen=True)
class ClassificationTrainTransform:
    """PIL image -> augmented, normalised (3, crop, crop) tensor."""

    crop: int
    resize_long_range: tuple[int, int]
    hflip: bool
    color_jitter: tuple[float, float, float, float]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: Image.Image, generator: torch.Generator) -> torch.Tensor:
        low, high = self.resize_long_range
        image = resize_long(image, int(torch.randint(low, high + 1, (1,), generator=generator)))
        if self.hflip and torch.rand((), generator=generator) < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if any(self.color_jitter):
            brightness, contrast, saturation, hue = self.color_jitter
            # ColorJitter draws from torch's global generator; seed it from ours for reproducibility.
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
            image = ColorJitter(brightness, contrast, saturation, hue)(image)
        return torch.from_numpy(random_crop(normalise_array(image, self.mean, self.std), self.crop, generator))
