# Config validation, shared paths and input functions.

from pathlib import Path

from snakemake.utils import validate

from wsss_lib.config import method_config
from wsss_lib.stages.data import dataset_class_names

validate(config, "../config/schema.yaml")


R = config["results"]
DATASET = config["dataset"]
METHODS = list(config["methods"])
SPLITS = ["train", "train_aug", "val"]
LOGS = f"{R}/logs"
BENCH = f"{R}/benchmarks"


wildcard_constraints:
    method="|".join(METHODS),
    split="|".join(SPLITS),


def gpu_count():
    """Training / inference jobs ask the cluster for a GPU unless the config forces the CPU."""
    return 0 if config["device"] == "cpu" else 1


def voc_root():
    """The VOC-layout tree of the configured dataset (a rule output unless voc12.root is given)."""
    if DATASET == "synthetic":
        return config["synthetic"]["root"]
    if config["voc12"]["root"]:
        return config["voc12"]["root"]
    return "data/voc12/VOC2012"


def dataset_input(wildcards):
    """prepare_splits depends on the generated or downloaded tree; a user-supplied root is not a rule output."""
    if DATASET == "voc12" and config["voc12"]["root"]:
        return []
    return voc_root()


def class_names():
    return dataset_class_names(DATASET, config["synthetic"]["n_classes"])


def hparams(method):
    return method_config(config, method)


def split_csv(split):
    return f"{R}/splits/{split}.csv"


def weights_input(wildcards):
    """The fetched ImageNet weights of a ResNet backbone, or a user-given state dict; nothing otherwise."""
    hp = hparams(wildcards.method)
    if hp["pretrained"] == "imagenet" and hp["backbone"].startswith("resnet"):
        return f"data/weights/{hp['backbone']}.pth"
    if hp["pretrained"] not in ("none", "imagenet"):
        return hp["pretrained"]
    return []


def cam_split_csv(wildcards):
    return split_csv(hparams(wildcards.method)["eval_cams"]["split"])
