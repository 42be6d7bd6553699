"""The DeepLab stage (wsss_lib/stages/segment.py): its start from the method's CAM net (init: cam)."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import saved_cam_net
from wsss_lib.data.label_png import write_label_png
from wsss_lib.stages import segment


def test_deeplab_with_init_cam_starts_from_the_cam_nets_backbone(tmp_path, monkeypatch):
    net, cam_path = saved_cam_net(tmp_path)
    rows = []
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
        write_label_png(tmp_path / "pseudo" / f"{i}.png", np.full((16, 16), i % 3, np.uint8))
        rows.append({"id": str(i), "image": str(tmp_path / f"{i}.png"), "mask": "", "a": 1, "b": 0})
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    started = {}

    def record_start(model, *args, **kwargs):  # the training loop, replaced: only the start is checked
        started.update({k: v.clone() for k, v in model.backbone.state_dict().items()})
        return []

    monkeypatch.setattr(segment, "fit", record_start)
    opts = {"init": "cam", "backbone": "small_cnn_w16", "pretrained": "none", "output_stride": 8, "head": "v2",
            "seed": 0, "iterations": 2, "batch_size": 2, "crop": 16, "scale_range": [1.0, 1.0], "hflip": False,
            "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "poly_power": 0.9, "new_layer_lr_mult": 10,
            "freeze_bn": False, "num_workers": 0}
    segment.train_deeplab(str(tmp_path / "pseudo"), str(tmp_path / "train.csv"), str(tmp_path / "seg.pt"),
                          str(tmp_path / "log.csv"), {"segment": opts}, init_model=str(cam_path))
    for key, value in net.backbone.state_dict().items():
        torch.testing.assert_close(started[key], value, rtol=0, atol=0)
    meta = torch.load(tmp_path / "seg.pt", weights_only=True)["meta"]
    assert meta["init"] == f"cam:{cam_path}"
    with pytest.raises(ValueError, match="segment.init: cam needs the method's CAM model"):
        segment.train_deeplab(str(tmp_path / "pseudo"), str(tmp_path / "train.csv"), str(tmp_path / "seg2.pt"),
                              str(tmp_path / "log2.csv"), {"segment": opts})
