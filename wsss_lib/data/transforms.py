"""Training and inference transforms for classification on VOC-layout images.

The augmentation follows PSA / IRN (Ahn & Kwak CVPR 2018; Ahn et al. CVPR 2019): random resize of the
long side, horizontal flip, colour jitter, normalisation, random crop padded with zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance

from wsss_lib.data.label_png import IGNORE_INDEX


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


def letterbox(image: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(H, W, 3) uint8 -> normalised (3, size, size): resized to long side ``size`` (aspect ratio kept) and
    centred on a canvas of zeros, the mean colour that :func:`random_crop` pads training crops with.

    The test-time view of a network trained on padded crops of ``resize_long`` images at a fixed input
    size (the ViT teacher): the whole image, undistorted, unlike a resize to ``size`` x ``size``.
    """
    scaled = normalise_array(resize_long(Image.fromarray(image), size), mean, std)
    height, width = scaled.shape[-2:]
    canvas = np.zeros((3, size, size), dtype=np.float32)
    top, left = (size - height) // 2, (size - width) // 2
    canvas[:, top:top + height, left:left + width] = scaled
    return canvas


@dataclass(frozen=True)
class CropWindow:
    """Where a crop x crop window takes its pixels: source offsets, canvas offsets and the copied extent."""

    src_y: int
    dst_y: int
    src_x: int
    dst_x: int
    height: int
    width: int


def random_crop_window(height: int, width: int, crop: int, generator: torch.Generator) -> CropWindow:
    """A random crop of a height x width image; a side shorter than ``crop`` lands at a random offset of the canvas."""

    def offsets(size: int) -> tuple[int, int]:
        slack = abs(size - crop)
        shift = int(torch.randint(slack + 1, (1,), generator=generator))
        return (shift, 0) if size > crop else (0, shift)  # (offset into source, offset into canvas)

    src_y, dst_y = offsets(height)
    src_x, dst_x = offsets(width)
    return CropWindow(src_y, dst_y, src_x, dst_x, min(height, crop), min(width, crop))


def apply_crop(array: np.ndarray, window: CropWindow, crop: int, fill=0) -> np.ndarray:
    """Cut ``window`` out of the last two axes of ``array`` onto a crop x crop canvas filled with ``fill``."""
    out = np.full((*array.shape[:-2], crop, crop), fill, dtype=array.dtype)
    w = window
    out[..., w.dst_y : w.dst_y + w.height, w.dst_x : w.dst_x + w.width] = \
        array[..., w.src_y : w.src_y + w.height, w.src_x : w.src_x + w.width]
    return out


def random_crop(array: np.ndarray, crop: int, generator: torch.Generator) -> np.ndarray:
    """A crop x crop window of a (C, H, W) array; a side shorter than ``crop`` lands at a random offset in zeros."""
    return apply_crop(array, random_crop_window(*array.shape[-2:], crop, generator), crop)


def colour_jitter_params(color_jitter: Sequence[float], generator: torch.Generator):
    """What torchvision's ``ColorJitter.get_params`` draws (the order of the four adjustments, then the
    brightness, contrast and saturation factors, uniform in [max(0, 1 - x), 1 + x], and the hue shift, uniform
    in [-h, h]; None for a component that is off), drawn from ``generator``: ColorJitter itself draws from
    torch's global RNG, which reseeding per image would make both unreproducible across workers and slow
    (``torch.manual_seed`` costs ~2 ms a call)."""
    order = torch.randperm(4, generator=generator)

    def uniform(low: float, high: float) -> float:
        return float(torch.empty(1).uniform_(low, high, generator=generator))

    brightness, contrast, saturation, hue = color_jitter
    factors = [uniform(max(0.0, 1 - x), 1 + x) if x else None for x in (brightness, contrast, saturation)]
    return (order, *factors, uniform(-hue, hue) if hue else None)


def shift_hue(image: Image.Image, shift: float) -> Image.Image:
    """Rotate an RGB image's hue by ``shift`` of a full turn ([-0.5, 0.5]) in PIL's 8-bit HSV, wrapping around."""
    hue, saturation, value = image.convert("HSV").split()
    hue = Image.fromarray(np.asarray(hue, dtype=np.uint8) + np.uint8(np.int32(shift * 255) % 256), "L")
    return Image.merge("HSV", (hue, saturation, value)).convert(image.mode)


# ColorJitter's four adjustments on a PIL image, as torchvision applies them (transforms/_functional_pil.py: PIL's
# enhancers, and the hue shift in 8-bit HSV). Applied with PIL directly because importing torchvision costs ~2 s
# per process (0.29's ops import torch._dynamo), for every job that reads training images.
COLOUR_ADJUSTMENTS = (
    lambda image, factor: ImageEnhance.Brightness(image).enhance(factor),
    lambda image, factor: ImageEnhance.Contrast(image).enhance(factor),
    lambda image, factor: ImageEnhance.Color(image).enhance(factor),
    shift_hue,
)


def jitter_colours(image: Image.Image, color_jitter: Sequence[float], generator: torch.Generator) -> Image.Image:
    """torchvision's ColorJitter(*color_jitter) on an RGB PIL image, its randomness from ``generator``."""
    if not any(color_jitter):
        return image
    order, *values = colour_jitter_params(color_jitter, generator)
    for index in order.tolist():
        if values[index] is not None:
            image = COLOUR_ADJUSTMENTS[index](image, values[index])
    return image


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
        image = jitter_colours(image, self.color_jitter, generator)
        return torch.from_numpy(random_crop(normalise_array(image, self.mean, self.std), self.crop, generator))


def downsample_labels(labels: np.ndarray, stride: int) -> np.ndarray:
    """(H, W) labels -> (ceil(H / stride), ceil(W / stride)): the label at each cell's centre pixel
    (clamped inside the map), so no label is invented by interpolation."""
    if stride == 1:
        return labels
    height, width = labels.shape
    ys = np.minimum(np.arange(0, height, stride) + stride // 2, height - 1)
    xs = np.minimum(np.arange(0, width, stride) + stride // 2, width - 1)
    return labels[np.ix_(ys, xs)]


@dataclass(frozen=True)
class SegmentationTrainTransform:
    """(PIL image, (H, W) uint8 label map) -> (normalised (3, crop, crop) tensor, int64 label tensor).

    The image and its labels get the same random resize (bilinear / nearest), flip and crop; the
    canvas outside the image is 0 in the image and IGNORE (255) in the labels. The resize is either a
    random long side (PSA / IRN: ``resize_long_range``) or a random scale factor (DeepLab:
    ``scale_range``). Labels are returned at ``label_stride`` (AffinityNet learns at stride 8).
    """

    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_long_range: tuple[int, int] | None = None
    scale_range: tuple[float, float] | None = None
    hflip: bool = True
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    label_stride: int = 1

    def __call__(self, image: Image.Image, labels: np.ndarray,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if labels.shape != (image.height, image.width):
            raise ValueError(f"label map is {labels.shape}, image is {(image.height, image.width)}")
        label_image = Image.fromarray(labels)
        if self.resize_long_range is not None:
            low, high = self.resize_long_range
            long_side = int(torch.randint(low, high + 1, (1,), generator=generator))
            scale = long_side / max(image.size)
        elif self.scale_range is not None:
            low, high = self.scale_range
            scale = low + (high - low) * float(torch.rand((), generator=generator))
        else:
            scale = 1.0
        if scale != 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image, label_image = image.resize(size, Image.BILINEAR), label_image.resize(size, Image.NEAREST)
        if self.hflip and torch.rand((), generator=generator) < 0.5:
            image, label_image = image.transpose(Image.FLIP_LEFT_RIGHT), label_image.transpose(Image.FLIP_LEFT_RIGHT)
        image = jitter_colours(image, self.color_jitter, generator)
        window = random_crop_window(image.height, image.width, self.crop, generator)
        pixels = apply_crop(normalise_array(image, self.mean, self.std), window, self.crop)
        cropped_labels = apply_crop(np.asarray(label_image), window, self.crop, fill=IGNORE_INDEX)
        return (torch.from_numpy(pixels),
                torch.from_numpy(downsample_labels(cropped_labels, self.label_stride).astype(np.int64)))
