"""AffinityNet: a backbone whose multi-level features become a per-pixel affinity embedding.

PSA (Ahn & Kwak, CVPR 2018, Sec. 3.3): the features of the last three backbone levels are each
reduced by a 1x1 convolution (64, 128 and 256 channels, ELU), brought to one resolution (stride 8),
concatenated and mixed by a 1x1 convolution (448 channels, ELU). The affinity of two positions is
then ``exp(-mean |f_i - f_j|)`` (see wsss_lib.affinity).

PSA taps ResNet-38's conv4, conv5 and conv6 (its ``resnet38_aff.py``): the ends of the last three
resolution levels of the undilated network (strides 8, 16 and 32), i.e. mid-level features that still
know edges next to the most semantic ones. Any backbone of wsss_lib.models.backbones works the same way:
the last stage of each of its last three levels (:func:`~wsss_lib.models.backbones.level_ends`) is tapped
and resized to the configured stride (8 or 4). For a ResNet these are layer2..layer4; for
EfficientNet-Lite0 the 40-, 112- and 1280-channel outputs (the last three *stages* would be three
stride-32 layers: no mid-level feature at all). PSA's taps are native stride-8 features (ResNet-38
dilates its last stages), so the backbone is built at output stride 8 by default
(``refine.affinity.output_stride``); at 16, the deeper taps are upsampled.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from wsss_lib.models.backbones import Backbone, build_backbone, level_ends

REDUCED_WIDTHS = (64, 128, 256)  # PSA resnet38_aff: f8_3, f8_4, f8_5
EMBEDDING_WIDTH = 448            # PSA: f9


def stage_channels(backbone: Backbone, probe_size: int = 64) -> list[int]:
    """Output channels of every stage, read from one small forward (backbones do not all declare them)."""
    was_training = backbone.training
    backbone.eval()
    channels = []
    with torch.no_grad():
        x = torch.zeros(1, 3, probe_size, probe_size)
        for stage in backbone.stages:
            x = stage(x)
            channels.append(x.shape[1])
    backbone.train(was_training)
    return channels


class AffinityNet(nn.Module):
    def __init__(self, backbone: Backbone, stride: int = 8):
        super().__init__()
        if stride not in (4, 8):
            raise ValueError(f"affinity stride must be 4 or 8, got {stride}")
        levels = level_ends(backbone)
        if len(levels) < 3:
            raise ValueError("AffinityNet taps the last three resolution levels of the backbone; this one has "
                             f"{len(levels)}")
        self.backbone = backbone
        self.stride = stride
        self.taps = tuple(levels[-3:])
        channels = stage_channels(backbone)
        tapped = [channels[i] for i in self.taps]
        self.reducers = nn.ModuleList(nn.Conv2d(c, w, 1, bias=False) for c, w in zip(tapped, REDUCED_WIDTHS))
        self.mixer = nn.Conv2d(sum(REDUCED_WIDTHS), EMBEDDING_WIDTH, 1, bias=False)
        for conv in self.reducers:  # PSA's initialisation of its new layers
            nn.init.kaiming_normal_(conv.weight)
        nn.init.xavier_uniform_(self.mixer.weight, gain=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> embedding (B, 448, ceil(H / stride), ceil(W / stride))."""
        size = (math.ceil(x.shape[-2] / self.stride), math.ceil(x.shape[-1] / self.stride))
        taps = []
        for i, stage in enumerate(self.backbone.stages[:self.taps[-1] + 1]):
            x = stage(x)
            if i in self.taps:
                taps.append(x)
        reduced = [F.elu(reducer(tap)) for reducer, tap in zip(self.reducers, taps)]
        reduced = [r if r.shape[-2:] == size else F.interpolate(r, size=size, mode="bilinear", align_corners=False)
                   for r in reduced]
        return F.elu(self.mixer(torch.cat(reduced, 1)))

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, new-layer parameters): PSA trains its new layers at 10x the learning rate."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        new = [p for module in (*self.reducers, self.mixer) for p in module.parameters() if p.requires_grad]
        return backbone, new


def build_affinity_net(backbone: str, pretrained: str = "none", output_stride: int = 16, stride: int = 8,
                       weights_file=None) -> AffinityNet:
    return AffinityNet(build_backbone(backbone, pretrained, output_stride, weights_file), stride)
