"""Data stage: materialise a dataset in VOC layout, write split tables, fetch backbone weights."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from wsss_lib.atomic import atomic_path
from wsss_lib.data.download import safe_extract_tar
from wsss_lib.data.sbd import build_segmentation_class_aug, read_id_list, train_aug_ids
from wsss_lib.data.voc import build_split_table


def prepare_voc12(voc_tar: str, sbd_tgz: str, out_root: str) -> None:
    """Extract VOC 2012 and SBD, build SegmentationClassAug and the train_aug list inside VOC2012/.

    train_aug (10,582 images) = SBD train + SBD val + VOC train, minus VOC val (as PSA / IRN use).
    The finished VOC2012/ folder is renamed into ``out_root`` only when complete.
    """
    out_root = Path(out_root)
    out_root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_root.parent, prefix=".prepare_voc12.") as work:
        work = Path(work)
        voc = safe_extract_tar(voc_tar, work / "voc") / "VOCdevkit" / "VOC2012"
        sbd = safe_extract_tar(sbd_tgz, work / "sbd") / "benchmark_RELEASE" / "dataset"
        lists = voc / "ImageSets" / "Segmentation"
        voc_train, voc_val = read_id_list(lists / "train.txt"), read_id_list(lists / "val.txt")
        aug = train_aug_ids(voc_train, voc_val, read_id_list(sbd / "train.txt"), read_id_list(sbd / "val.txt"))
        build_segmentation_class_aug(voc, sbd, voc / "SegmentationClassAug", sorted(set(aug) | set(voc_val)))
        (lists / "train_aug.txt").write_text("".join(f"{i}\n" for i in aug))
        if out_root.exists():
            shutil.rmtree(out_root)
        os.replace(voc, out_root)


def prepare_split(voc_root: str, split: str, class_names: Sequence[str], csv_out: str) -> int:
    """Write the split table CSV; returns the number of images."""
    table = build_split_table(voc_root, split, class_names)
    with atomic_path(csv_out, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    return len(table)


def fetch_weights(backbone: str, out: str) -> None:
    """Download torchvision's ImageNet weights of a ResNet or ViT-B/16 (a localrule: compute nodes need no internet).

    torch.hub checks the SHA-256 prefix that torchvision encodes in the file name.
    """
    # torch and torchvision here only: the split jobs of this stage start without them (~4 s less each)
    import torch

    from wsss_lib.models.backbones import resnet_weights
    from wsss_lib.models.vit import vit_weights_url

    urls = {name: weights.url for name, weights in resnet_weights().items()} | {"vit_b_16": vit_weights_url()}
    if backbone not in urls:
        raise ValueError(f"no ImageNet weights to fetch for {backbone!r}; known: {sorted(urls)}")
    url = urls[backbone]
    hash_prefix = Path(url).stem.rsplit("-", 1)[-1]
    with atomic_path(out, suffix=".pth") as tmp:
        torch.hub.download_url_to_file(url, str(tmp), hash_prefix=hash_prefix, progress=True)
