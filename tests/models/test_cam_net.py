"""CAM nets as a start for other networks (init: cam), and the small CNN's widths. DeepLab's start from one:
tests/stages/test_stage_segment.py."""

import pytest
import torch

from conftest import saved_cam_net
from wsss_lib.models.backbones import build_backbone
from wsss_lib.models.cam_net import cam_backbone_state


@pytest.mark.parametrize("name, widths", [("small_cnn", (32, 64, 128, 256)), ("small_cnn_w16", (16, 32, 64, 128))])
def test_small_cnn_widths(name, widths):
    backbone = build_backbone(name, "none", 8)
    assert tuple(stage[-1][0].out_channels for stage in backbone.stages) == widths
    assert backbone.out_channels == widths[-1]
    assert backbone(torch.zeros(1, 3, 32, 32)).shape == (1, widths[-1], 4, 4)


def test_cam_backbone_state_is_the_cam_nets_backbone_and_refuses_another_backbone(tmp_path):
    net, path = saved_cam_net(tmp_path)
    state = cam_backbone_state(path, "small_cnn_w16")
    assert state.keys() == net.backbone.state_dict().keys()
    for key, value in net.backbone.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"cam\.pt has a small_cnn_w16 backbone: it cannot initialise a small_cnn"):
        cam_backbone_state(path, "small_cnn")
