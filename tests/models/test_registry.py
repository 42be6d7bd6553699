"""One save and one load for every network: save_network / load_network of wsss_lib.models.registry."""

import re

import pytest
import torch

from wsss_lib.models.checkpoint import save_checkpoint
from wsss_lib.models.registry import ARCHITECTURES, builder, load_network, save_network

BUILDS = {
    "cam_net": {"backbone": "small_cnn", "n_classes": 3, "output_stride": 8, "n_subcategories": 4},
    "affinity_net": {"backbone": "small_cnn", "output_stride": 8, "stride": 4},
    "deeplab": {"backbone": "small_cnn", "n_classes": 3, "output_stride": 8, "head": "v2", "rates": [2, 4]},
    "deeplab_v3": {"backbone": "small_cnn", "n_classes": 3, "output_stride": 8, "head": "v3"},
    "vit": {"preset": "vit_tiny_scratch", "n_classes": 5, "image_size": 64},
}


def built(name: str):
    architecture = name.removesuffix("_v3")
    torch.manual_seed(0)
    model = builder(architecture)(**BUILDS[name])
    model.train()
    with torch.no_grad():  # move BatchNorm running statistics away from their defaults
        model(torch.randn(2, 3, 64, 64))
    if architecture == "vit":  # its head starts at zero: randomise it so outputs depend on it
        torch.nn.init.normal_(model.classifier.weight, std=0.1)
    return architecture, model.eval()


@pytest.mark.parametrize("name", list(BUILDS))
def test_round_trip_gives_the_same_network_and_meta(tmp_path, name):
    architecture, model = built(name)
    path = tmp_path / "m.pt"
    save_network(path, model, architecture=architecture, build_args=BUILDS[name], class_names=["a", "b", "c"],
                 method="m")
    loaded, meta = load_network(path, architecture)
    assert meta == {"architecture": architecture, "build_args": BUILDS[name], "class_names": ["a", "b", "c"],
                    "method": "m"}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.eval()(x))
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary behind


def test_another_architecture_is_refused_naming_the_file(tmp_path):
    architecture, model = built("cam_net")
    path = tmp_path / "cam.pt"
    save_network(path, model, architecture=architecture, build_args=BUILDS["cam_net"])
    for other in set(ARCHITECTURES) - {"cam_net"}:
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*architecture: 'cam_net'"):
            load_network(path, other)


def test_unknown_architecture_or_rejected_build_args_are_refused_naming_the_file(tmp_path):
    _, model = built("cam_net")
    path = tmp_path / "m.pt"
    save_checkpoint(path, model.state_dict(), {"architecture": "resnet_classifier", "build_args": {}})
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not a model file written by save_network"):
        load_network(path)
    save_checkpoint(path, model.state_dict(), {"architecture": "cam_net", "build_args": {"depth": 3}})
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": cam_net cannot be built from"):
        load_network(path)
    save_checkpoint(path, model.state_dict(), {"architecture": "cam_net",
                                               "build_args": {**BUILDS["cam_net"], "pretrained": "imagenet"}})
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": build_args name pretrained weights"):
        load_network(path)
    save_checkpoint(path, model.state_dict(), {"architecture": "cam_net",
                                               "build_args": {**BUILDS["cam_net"], "n_classes": 4}})
    with pytest.raises(ValueError, match=re.escape(f"CAM model {path} does not fit its network: shape of")):
        load_network(path, "cam_net")


def test_save_refuses_build_args_that_are_not_the_model_or_not_plain(tmp_path):
    _, model = built("deeplab")
    path = tmp_path / "seg.pt"
    with pytest.raises(ValueError, match="is not the deeplab that"):  # the rates are no tensor shape
        save_network(path, model, architecture="deeplab", build_args={**BUILDS["deeplab"], "rates": [3, 4]})
    with pytest.raises(ValueError, match="is not the deeplab that"):
        save_network(path, model, architecture="deeplab", build_args={**BUILDS["deeplab"], "n_classes": 4})
    _, vit = built("vit")
    with pytest.raises(ValueError, match="does not fit its network: shape of backbone.encoder.pos_embedding"):
        save_network(path, vit, architecture="vit", build_args={**BUILDS["vit"], "image_size": 32})
    with pytest.raises(TypeError, match="Path"):
        save_network(path, model, architecture="deeplab", build_args=BUILDS["deeplab"], source=tmp_path)
    assert not path.exists()
