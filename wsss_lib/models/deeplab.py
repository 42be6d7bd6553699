"""DeepLab: a dilated backbone and an atrous spatial pyramid pooling (ASPP) head giving class logits.

The segmentation stage of the WSSS chain trains DeepLab on the refined pseudo-labels, as PSA, IRN
and SC-CAM do.

- ``head="v2"``: DeepLab-v2 (Chen et al., "DeepLab: Semantic Image Segmentation with Deep
  Convolutional Nets, Atrous Convolution, and Fully Connected CRFs", TPAMI 2017, Sec. 3.2 and
  Fig. 4). On ResNet-101 at output stride 8, ASPP-L is four parallel 3x3 convolutions with
  dilations 6, 12, 18 and 24, each mapping the backbone features straight to class logits; the four
  branch outputs are summed. Its new layers start from N(0, 0.01) weights and zero biases (the
  ``gaussian std: 0.01`` / ``constant 0`` fillers of DeepLab-v2's released prototxt). The rates are
  the paper's for output stride 8 and are not rescaled at other strides.
- ``head="v3"``: DeepLab-v3's ASPP (Chen et al., "Rethinking Atrous Convolution for Semantic Image
  Segmentation", arXiv:1706.05587, Sec. 3.3): a 1x1 branch, three 3x3 atrous branches and image
  pooling, each 256 channels with BatchNorm, concatenated, projected, then a classifier. It is
  torchvision's ``DeepLabHead``. The paper uses rates (6, 12, 18) at output stride 16 and doubles
  them at output stride 8 (same section); :func:`v3_rates` applies that rule. Its image-pooling branch
  has BatchNorm on a 1x1 map, so training needs batches of at least 2 images.

Any backbone of wsss_lib.models.backbones works; its ``output_stride`` is the logits' stride.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn

from wsss_lib.models.backbones import Backbone, build_backbone

HEADS = ("v2", "v3")
V2_RATES = (6, 12, 18, 24)    # DeepLab-v2 ASPP-L (TPAMI 2017, Sec. 3.2), at output stride 8
V3_RATES_OS16 = (6, 12, 18)   # DeepLab-v3 (arXiv:1706.05587, Sec. 3.3), at output stride 16


class ASPPv2(nn.Module):
    """DeepLab-v2 ASPP: ``sum_r conv3x3_dilation=r(x)``, each branch from features to class logits.

    (B, in_channels, h, w) -> (B, n_classes, h, w): padding equals dilation, so every branch keeps
    the spatial size.
    """

    def __init__(self, in_channels: int, n_classes: int, rates: Sequence[int] = V2_RATES):
        super().__init__()
        if not rates:
            raise ValueError("ASPPv2 needs at least one rate")
        self.rates = tuple(int(r) for r in rates)
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, n_classes, 3, padding=rate, dilation=rate, bias=True) for rate in self.rates
        )
        for conv in self.branches:  # DeepLab-v2's fillers for fc1_*: gaussian std 0.01, bias 0
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A sum of a handful of convolutions; stacking them into one grouped conv would not be
        # faster, because the dilations differ.
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


def v3_rates(output_stride: int) -> tuple[int, ...]:
    """DeepLab-v3's ASPP rates for ``output_stride``: (6, 12, 18) at 16, doubled at 8 (halved at 32)."""
    if output_stride not in (8, 16, 32):
        raise ValueError(f"DeepLab-v3 rates are defined for output stride 8, 16 or 32, not {output_stride}")
    return tuple(rate * 16 // output_stride for rate in V3_RATES_OS16)


def default_rates(head: str, output_stride: int) -> tuple[int, ...]:
    """The paper's ASPP rates for ``head`` on a backbone of ``output_stride``."""
    if head not in HEADS:
        raise ValueError(f"unknown DeepLab head {head!r}; choose from {', '.join(HEADS)}")
    return V2_RATES if head == "v2" else v3_rates(output_stride)


class DeepLab(nn.Module):
    """Backbone + ASPP head. ``rates=None`` takes the paper's rates for the head (see module docstring)."""

    def __init__(self, backbone: Backbone, n_classes: int, head: str = "v2", rates: Sequence[int] | None = None):
        super().__init__()
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        rates = default_rates(head, backbone.output_stride) if rates is None else tuple(int(r) for r in rates)
        if not rates or min(rates) < 1:
            raise ValueError(f"ASPP rates must be positive integers, got {rates}")
        self.backbone = backbone
        self.n_classes = int(n_classes)
        self.head_kind = head
        self.rates = rates
        if head == "v2":
            self.head = ASPPv2(backbone.out_channels, n_classes, rates)
        else:  # torchvision imported here only: it costs ~2 s per process (see models/backbones.py)
            from torchvision.models.segmentation.deeplabv3 import DeepLabHead

            self.head = DeepLabHead(backbone.out_channels, n_classes, atrous_rates=rates)

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> logits (B, n_classes, ceil(H / os), ceil(W / os)).

        ``os`` is the backbone's output stride; the logits are not upsampled here (the loss and
        :func:`wsss_lib.segmentation.predict_probabilities` upsample them to the image).
        """
        return self.head(self.backbone(x))

    def param_groups(self) -> tuple[list[nn.Parameter], ...]:
        """(backbone, head weights, head biases) for the v2 head, as deeplab-pytorch (main.py, used by SC-CAM
        and mva-wsss) trains DeepLab-v2: backbone 1x, ASPP weights 10x with weight decay, ASPP biases 20x
        without (:func:`wsss_lib.training.build_optimizer`); (backbone, head) for torchvision's v3 head."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        named = [(name, p) for name, p in self.head.named_parameters() if p.requires_grad]
        if self.head_kind != "v2":
            return backbone, [p for _, p in named]
        weights = [p for name, p in named if not name.endswith("bias")]
        biases = [p for name, p in named if name.endswith("bias")]
        return backbone, weights, biases


def build_deeplab(backbone: str, n_classes: int, pretrained: str = "none", output_stride: int = 8,
                  head: str = "v2", weights_file: str | os.PathLike | None = None,
                  rates: Sequence[int] | None = None) -> DeepLab:
    return DeepLab(build_backbone(backbone, pretrained, output_stride, weights_file), n_classes, head, rates)
