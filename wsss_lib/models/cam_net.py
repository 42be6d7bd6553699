"""The CAM classifier: a backbone, global average pooling and a 1x1-conv classifier.

Class activation maps (Zhou et al. CVPR 2016, "Learning Deep Features for Discriminative
Localization") are the classifier weights applied at every position of the last feature map:
``CAM_c(x, y) = w_c . f(x, y)``; with GAP before a linear classifier, the logit of class c is the
spatial mean of CAM_c. The 1x1 conv without bias follows PSA / IRN.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from wsss_lib.models.backbones import Backbone, build_backbone
from wsss_lib.models.registry import load_network


class CAMNet(nn.Module):
    """GAP classifier; with ``n_subcategories`` > 0 a second 1x1-conv head classifies sub-categories
    (SC-CAM, Chang et al. CVPR 2020), trained jointly and ignored when CAMs are made."""

    def __init__(self, backbone: Backbone, n_classes: int, n_subcategories: int = 0):
        super().__init__()
        self.backbone = backbone
        self.n_classes = n_classes
        self.n_subcategories = n_subcategories
        self.classifier = nn.Conv2d(backbone.out_channels, n_classes, 1, bias=False)
        self.sub_classifier = (nn.Conv2d(backbone.out_channels, n_subcategories, 1, bias=False)
                               if n_subcategories else None)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image-level logits (B, K)."""
        pooled = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(pooled).flatten(1)

    def cams(self, x: torch.Tensor) -> torch.Tensor:
        """Non-negative class activation maps (B, K, h, w) at the backbone's output stride."""
        return F.relu(self.classifier(self.features(x)))

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, new-layer parameters): new layers get a larger learning rate."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        heads = [self.classifier] + ([self.sub_classifier] if self.sub_classifier is not None else [])
        new = [p for head in heads for p in head.parameters() if p.requires_grad]
        return backbone, new

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """The image's feature vector (B, C): global average of the last feature map (SC-CAM's clustering input)."""
        return self.features(x).mean((-2, -1))


def build_cam_net(backbone: str, n_classes: int, pretrained: str = "none", output_stride: int = 16,
                  weights_file=None, n_subcategories: int = 0) -> CAMNet:
    return CAMNet(build_backbone(backbone, pretrained, output_stride, weights_file), n_classes, n_subcategories)


def cam_backbone_state(path, backbone: str) -> dict:
    """The backbone weights of the CAM net saved at ``path``, for a network on the same ``backbone`` that starts
    from them (AffinityNet or DeepLab with ``init: cam``, where no ImageNet weights exist to start from)."""
    model, meta = load_network(path, "cam_net")
    if meta["build_args"]["backbone"] != backbone:
        raise ValueError(f"CAM model {path} has a {meta['build_args']['backbone']} backbone: it cannot initialise "
                         f"a {backbone}")
    return model.backbone.state_dict()
