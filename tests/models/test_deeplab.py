"""DeepLab: logits at the output stride, ASPP-v2 as a sum of dilated convolutions, parameter groups, save/load."""

import math

import pytest
import torch
import torch.nn.functional as F

from wsss_lib.models.deeplab import ASPPv2, build_deeplab, v3_rates
from wsss_lib.training import TrainSettings, build_optimizer


@pytest.mark.parametrize("head", ["v2", "v3"])
@pytest.mark.parametrize("backbone,n_classes,stride,input_shape,expected", [
    ("small_cnn", 5, 8, (2, 3, 64, 48), (2, 5, 8, 6)),  # 64 / 8, 48 / 8
    ("resnet18", 3, 16, (1, 3, 70, 45), (1, 3, math.ceil(70 / 16), math.ceil(45 / 16))),  # (1, 3, 5, 3)
])
def test_logits_are_at_the_backbone_stride(head, backbone, n_classes, stride, input_shape, expected):
    torch.manual_seed(0)
    net = build_deeplab(backbone, n_classes, "none", stride, head).eval()
    with torch.no_grad():
        out = net(torch.randn(*input_shape))
    assert net.output_stride == stride
    assert out.shape == expected


def test_v3_rates_follow_the_output_stride():
    assert v3_rates(16) == (6, 12, 18)
    assert v3_rates(8) == (12, 24, 36)
    assert build_deeplab("small_cnn", 2, "none", 8, "v3").rates == (12, 24, 36)
    assert build_deeplab("small_cnn", 2, "none", 8, "v2").rates == (6, 12, 18, 24)


def test_aspp_v2_is_the_sum_of_separate_dilated_convolutions():
    torch.manual_seed(0)
    aspp = ASPPv2(6, 4, rates=(6, 12, 18, 24))
    for conv in aspp.branches:  # non-zero biases, so a dropped bias would show
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 6, 30, 27)
    expected = sum(F.conv2d(x, conv.weight, conv.bias, padding=rate, dilation=rate)
                   for conv, rate in zip(aspp.branches, (6, 12, 18, 24)))
    with torch.no_grad():
        out = aspp(x)
    assert out.shape == (2, 4, 30, 27)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_aspp_v2_initialisation_is_deeplabs():
    torch.manual_seed(0)
    aspp = ASPPv2(64, 21)
    weights = torch.cat([conv.weight.flatten() for conv in aspp.branches])  # 4 * 21 * 64 * 9 values
    assert abs(weights.std().item() - 0.01) < 0.0005
    assert abs(weights.mean().item()) < 0.0005
    assert all(torch.equal(conv.bias, torch.zeros(21)) for conv in aspp.branches)


@pytest.mark.parametrize("head", ["v2", "v3"])
def test_param_groups_split_all_parameters_once(head):
    net = build_deeplab("small_cnn", 4, "none", 8, head)
    backbone, *new = net.param_groups()
    ids = [id(p) for group in (backbone, *new) for p in group]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert {id(p) for group in new for p in group} == {id(p) for p in net.head.parameters()}
    assert {id(p) for p in backbone} == {id(p) for p in net.backbone.parameters()}


def test_v2_optimizer_groups_follow_deeplab_pytorch():
    """deeplab-pytorch main.py: backbone 1x lr with decay; ASPP weights 10x with decay; ASPP biases 20x, no decay."""
    net = build_deeplab("small_cnn", 4, "none", 8, "v2")
    settings = TrainSettings(epochs=1, batch_size=2, lr=2.5e-4, weight_decay=5e-4, momentum=0.9, poly_power=0.9,
                             new_layer_lr_mult=10)
    groups = build_optimizer(net, settings).param_groups
    aspp = net.head.branches
    expected = [
        ({id(p) for p in net.backbone.parameters()}, 2.5e-4, 5e-4),
        ({id(conv.weight) for conv in aspp}, 2.5e-3, 5e-4),
        ({id(conv.bias) for conv in aspp}, 5e-3, 0.0),
    ]
    assert len(groups) == 3
    for group, (ids, lr, decay) in zip(groups, expected):
        assert {id(p) for p in group["params"]} == ids
        assert group["lr"] == pytest.approx(lr) and group["weight_decay"] == decay


def test_unknown_head_is_refused():
    with pytest.raises(ValueError, match="unknown DeepLab head"):
        build_deeplab("small_cnn", 3, "none", 8, "v4")
