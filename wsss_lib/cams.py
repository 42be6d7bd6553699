"""Multi-scale, flip-augmented CAM inference (CAM -> label conversion: wsss_lib.evaluation).

Test-time augmentation follows IRN (Ahn et al. CVPR 2019): scales (1.0, 0.5, 1.5, 2.0) with
horizontal flips, CAMs resized to a common grid and summed, then each class map divided by its
maximum. All flips of all images in a batch share one forward per scale, instead of one forward per
view (as mva-wsss does); see benchmarks/make_cams_batching.py.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def multiscale_cams(model, images: torch.Tensor, scales: Sequence[float], flip: bool = True,
                    strided_stride: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """CAMs of a batch of same-size images, summed over scales and flips.

    Returns ``(strided, high_res)``: (B, K, ceil(H/s), ceil(W/s)) and (B, K, H, W), both raw sums
    (not yet normalised). One forward per scale carries every image and its mirror.
    """
    batch, _, height, width = images.shape
    strided_size = (-(-height // strided_stride), -(-width // strided_stride))
    views = torch.cat([images, images.flip(-1)]) if flip else images
    strided = high_res = None
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = views if scale == 1.0 else F.interpolate(views, size=size, mode="bilinear", align_corners=False)
        cams = model.cams(scaled).float()
        if flip:
            cams = cams[:batch] + cams[batch:].flip(-1)
        s = F.interpolate(cams, size=strided_size, mode="bilinear", align_corners=False)
        h = F.interpolate(cams, size=(height, width), mode="bilinear", align_corners=False)
        strided = s if strided is None else strided + s
        high_res = h if high_res is None else high_res + h
    return strided, high_res


def normalise_by_max(cams: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divide each (image, class) map by its spatial maximum (IRN's normalisation)."""
    peak = cams.flatten(-2).amax(-1)[..., None, None]
    return cams / (peak + eps)
