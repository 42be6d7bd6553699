"""AffinityNet: embedding size at the affinity stride, parameter groups, save/load, CAM-net init."""

import math

import pytest
import torch

from wsss_lib.models.affinity_net import EMBEDDING_WIDTH, build_affinity_net


@pytest.mark.parametrize("backbone,output_stride,stride,size", [
    ("small_cnn", 8, 8, (64, 64)), ("small_cnn", 8, 4, (70, 45)), ("resnet18", 16, 8, (75, 50)),
])
def test_embedding_has_the_affinity_stride(backbone, output_stride, stride, size):
    torch.manual_seed(0)
    net = build_affinity_net(backbone, "none", output_stride, stride).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, *size))
    assert out.shape == (2, EMBEDDING_WIDTH, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    assert torch.all(out >= -1.0)  # ELU output


def test_output_stride_8_taps_three_native_stride_8_levels():
    """PSA's three tapped levels are all at stride 8; with an output-stride-16 ResNet two would be at 16."""
    for output_stride, expected in ((8, [8, 8, 8]), (16, [8, 16, 16])):
        net = build_affinity_net("resnet18", "none", output_stride, 8).eval()
        x, strides = torch.zeros(1, 3, 64, 64), []
        with torch.no_grad():
            for stage in net.backbone.stages:
                x = stage(x)
                strides.append(64 // x.shape[-1])
        assert strides[-3:] == expected, (output_stride, strides)


@pytest.mark.parametrize("backbone,undilated_stride", [
    ("small_cnn", 16), ("resnet18", 32), ("efficientnet_lite0", 32),
])
def test_taps_are_the_ends_of_the_last_three_resolution_levels(backbone, undilated_stride):
    """As PSA's conv4/conv5/conv6 of ResNet-38: the last stage at each of the three deepest strides of the
    undilated net (measured here by a forward pass), whatever output stride the affinity backbone has."""
    from wsss_lib.models.backbones import build_backbone

    plain = build_backbone(backbone, "none", undilated_stride).eval()
    x, measured = torch.zeros(1, 3, 64, 64), []
    with torch.no_grad():
        for stage in plain.stages:
            x = stage(x)
            measured.append(64 // x.shape[-1])
    assert list(plain.stage_strides) == measured
    deepest = sorted(set(measured))[-3:]
    expected = tuple(max(i for i, s in enumerate(measured) if s == level) for level in deepest)
    net = build_affinity_net(backbone, "none", 8, 8)
    assert net.taps == expected
    if backbone == "efficientnet_lite0":  # not its three stride-32 stages (192, 320, 1280 channels)
        assert [r.in_channels for r in net.reducers] == [40, 112, 1280]


def test_param_groups_split_all_parameters_once():
    net = build_affinity_net("small_cnn", "none", 8, 8)
    backbone, new = net.param_groups()
    ids = [id(p) for p in backbone + new]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert {id(p) for p in new} == {id(p) for m in (*net.reducers, net.mixer) for p in m.parameters()}


