from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from wsss_lib.config import deep_merge, method_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "config" / "schema.yaml")


def load_config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_shipped_config_is_valid():
    validate(load_config(), SCHEMA)


@pytest.mark.parametrize("section", [None, "defaults.train_cam", "methods.baseline"])
def test_unknown_key_fails_validation_naming_it(section):
    config = load_config()
    node = config
    for part in section.split(".") if section else []:
        node[part] = node.get(part) or {}
        node = node[part]
    node["epochz"] = 1
    with pytest.raises(Exception, match="epochz"):
        validate(config, SCHEMA)


def test_method_config_merges_defaults_dataset_and_method():
    config = {
        "dataset": "synthetic",
        "defaults": {"backbone": "resnet50", "train_cam": {"lr": 0.1, "epochs": 5}},
        "synthetic": {"hparams": {"backbone": "small_cnn", "train_cam": {"epochs": 12}}},
        "methods": {"baseline": {}, "fast": {"train_cam": {"lr": 0.5}}, "empty": None},
    }
    assert method_config(config, "fast") == {"backbone": "small_cnn", "train_cam": {"lr": 0.5, "epochs": 12}}
    assert method_config(config, "empty")["train_cam"] == {"lr": 0.1, "epochs": 12}
    with pytest.raises(KeyError, match="nope"):
        method_config(config, "nope")
    assert config["defaults"]["train_cam"]["lr"] == 0.1  # inputs untouched


def test_deep_merge_replaces_lists_and_scalars():
    assert deep_merge({"a": [1, 2], "b": {"c": 1}}, {"a": [3], "b": {"d": 2}}) == {"a": [3], "b": {"c": 1, "d": 2}}
