"""Training loss, pseudo-label reading, multi-scale inference and CRF post-processing for DeepLab.

The last stage of the WSSS chain (PSA, Ahn & Kwak CVPR 2018; IRN, Ahn et al. CVPR 2019) trains
DeepLab (Chen et al. TPAMI 2017) on the refined pseudo-labels with pixel cross-entropy, predicts
with test-time scales and flips, and refines the prediction with DeepLab-v2's dense CRF.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsss_lib.crf import CRFParams, dense_crf, pool_imap
from wsss_lib.data.ids import id_path
from wsss_lib.data.label_png import IGNORE_INDEX, read_label_png
from wsss_lib.data.voc import read_image
from wsss_lib.device import autocast, varied_input_sizes


# DeepLab-v2's dense-CRF settings for PASCAL VOC with ResNet-101, from the official DeepLab-v2
# ResNet page (liangchiehchen.com/projects/DeepLabv2_resnet.html): "bi_w = 4, bi_xy_std = 67,
# bi_rgb_std = 3, pos_w = 3, pos_xy_std = 1"; 10 mean-field iterations as in DeepLab's densecrf
# (MaxIterations 10). Reproduced in kazuto1011/deeplab-pytorch configs/voc12.yaml (CRF: ITER_MAX 10,
# POS_W 3, POS_XY_STD 1, BI_W 4, BI_XY_STD 67, BI_RGB_STD 3) and in the EPS README (Lee et al.
# CVPR 2021). The VGG-16 model used other values (bi_w 4, bi_xy_std 65, bi_rgb_std 3, pos_w 2,
# pos_xy_std 2). pydensecrf's Gaussian kernel is DeepLab's "pos" term, its bilateral kernel "bi".
DEEPLAB_CRF = CRFParams(
    iterations=10,
    gaussian_sxy=1.0,       # pos_xy_std
    gaussian_compat=3.0,    # pos_w
    bilateral_sxy=67.0,     # bi_xy_std
    bilateral_srgb=3.0,     # bi_rgb_std
    bilateral_compat=4.0,   # bi_w
)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of (B, C, h, w) logits to ``size``, in float32.

    float32 because under CUDA autocast the logits are float16 and interpolation keeps the dtype.
    """
    logits = logits.float()
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean pixel cross-entropy ``-log softmax(z)_y`` over the pixels whose label is not ``ignore_index``.

    ``logits`` (B, C, h, w) at any stride are bilinearly upsampled to the labels' (B, H, W) size
    first (DeepLab-v3 and torchvision's reference scripts do this; DeepLab-v2 instead subsampled
    the labels). The sum is divided by ``max(count, 1)``, so a batch with no labelled pixel gives
    a loss of exactly 0 and an all-zero gradient, where ``reduction="mean"`` would give 0/0 = NaN.
    """
    if logits.ndim != 4 or labels.ndim != 3 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"need (B, C, h, w) logits and (B, H, W) labels, got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    labels = labels.long()
    labelled = labels != ignore_index
    n_classes = logits.shape[1]
    # Checked here because an out-of-range label is a device-side assert on CUDA, naming nothing.
    if bool((labelled & ((labels < 0) | (labels >= n_classes))).any()):
        bad = torch.unique(labels[labelled & ((labels < 0) | (labels >= n_classes))]).tolist()
        raise ValueError(f"labels {bad[:10]} are outside the {n_classes} classes (ignore index {ignore_index})")
    logits = upsample_logits(logits, tuple(labels.shape[-2:]))
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return total / labelled.sum().clamp(min=1)


@dataclass(frozen=True)
class SegmentationBatchLoss:
    """BatchLoss for :func:`wsss_lib.training.fit`: pixel cross-entropy on pseudo-labels.

    Returns ``(loss, {"ce": loss, "labelled_fraction": share of pixels not ignored})``. The
    generator is unused: DeepLab's loss has no randomness of its own.
    """

    ignore_index: int = IGNORE_INDEX

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = segmentation_loss(model(images), labels, self.ignore_index)
        labelled = (labels != self.ignore_index).float().mean()
        return loss, {"ce": loss.detach(), "labelled_fraction": labelled}


def segmentation_batch_loss(ignore_index: int = IGNORE_INDEX) -> SegmentationBatchLoss:
    return SegmentationBatchLoss(ignore_index)


@dataclass(frozen=True)
class PseudoLabelReader:
    """``reader(image_id)`` -> (H, W) uint8 labels from ``{directory}/{image_id}.png``.

    A plain dataclass of a path, so it pickles into DataLoader workers
    (SegmentationTrainDataset's ``read_labels``).
    """

    directory: Path

    def __init__(self, directory: str | os.PathLike):
        object.__setattr__(self, "directory", Path(directory))

    def __call__(self, image_id: str) -> np.ndarray:
        path = id_path(self.directory, image_id, ".png", f"pseudo-labels {self.directory}")
        try:
            return read_label_png(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"pseudo-label of image {image_id!r} not found: {path}") from None


@torch.no_grad()
def predict_probabilities(model: nn.Module, image: torch.Tensor, scales: Sequence[float] = (1.0,),
                          flip: bool = False) -> torch.Tensor:
    """Class probabilities (C, H, W) of one normalised (3, H, W) image, averaged over views.

    Test-time augmentation as in DeepLab-v2 (Chen et al. TPAMI 2017: multi-scale inputs) and
    DeepLab-v3 (arXiv:1706.05587: "MS" scales and left-right "Flip" at inference): for each scale the
    image is resized bilinearly; the image and its mirror go through the model in one batch; the
    mirror's logits are flipped back; every view's logits are upsampled to (H, W) and softmaxed, and
    the probabilities of all ``len(scales) * (2 if flip else 1)`` views are averaged.

    The model must be in eval mode (BatchNorm on running statistics) and on ``image.device``;
    mixed precision is used on CUDA only (wsss_lib.device.autocast).
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be one normalised (3, H, W) tensor, got shape {tuple(image.shape)}")
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive and non-empty, got {tuple(scales)}")
    if model.training:
        raise ValueError("predict_probabilities needs the model in eval mode (call model.eval())")
    height, width = image.shape[-2:]
    views = torch.stack([image, image.flip(-1)]) if flip else image[None]
    total = None
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = views if size == (height, width) else F.interpolate(views, size=size, mode="bilinear",
                                                                      align_corners=False)
        with autocast(image.device), varied_input_sizes(image.device):
            logits = model(scaled)
        if flip:
            logits = torch.cat([logits[:1], logits[1:].flip(-1)])
        probabilities = upsample_logits(logits, (height, width)).softmax(1).sum(0)
        total = probabilities if total is None else total + probabilities
    return total / (len(scales) * views.shape[0])


def crf_refine(image_uint8: np.ndarray, probabilities: np.ndarray | torch.Tensor,
               params: CRFParams = DEEPLAB_CRF) -> np.ndarray:
    """(H, W) int64 labels: the argmax of the dense-CRF marginals over ``probabilities`` (C, H, W).

    DeepLab-v2's post-processing (Chen et al. TPAMI 2017, Sec. 3.3, Eq. 2-3): unary ``-log P``,
    a Gaussian and a bilateral pairwise kernel, mean-field inference (Krähenbühl & Koltun 2011).
    ``image_uint8`` is the (H, W, 3) RGB image at the probabilities' size.
    """
    if isinstance(probabilities, torch.Tensor):
        probabilities = probabilities.detach().float().cpu().numpy()
    marginals = dense_crf(image_uint8, np.asarray(probabilities, dtype=np.float32), params)
    return marginals.argmax(0).astype(np.int64)


def _crf_labels_of(item: tuple[str, str, np.ndarray], params: CRFParams) -> tuple[str, np.ndarray]:
    """The pool worker of :func:`crf_refine_many`: read the image, refine its probabilities."""
    image_id, image_path, probabilities = item
    image = read_image(image_path)
    if probabilities.ndim != 3 or probabilities.shape[1:] != image.shape[:2]:
        raise ValueError(f"image {image_id!r}: probabilities have shape {probabilities.shape}, "
                         f"image {image_path} is {image.shape}")
    return image_id, crf_refine(image, probabilities, params).astype(np.uint8)


def crf_refine_many(items: Iterable[tuple[str, str, np.ndarray]], params: CRFParams = DEEPLAB_CRF,
                    processes: int = 1) -> Iterator[tuple[str, np.ndarray]]:
    """``(image_id, uint8 crf_refine labels)`` for each ``(image_id, image path, (C, H, W) probabilities)``,
    in order, in ``processes`` single-threaded workers (results identical to the serial run)."""
    return pool_imap(functools.partial(_crf_labels_of, params=params), items, processes)
