"""Segmentation stage: DeepLab (Chen et al. TPAMI 2017) trained on a method's pseudo-labels, its val
predictions (multi-scale + flip, optional dense CRF) and their mIoU, as in SC-CAM / Mixup-CAM / PSA."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from wsss_lib.atomic import atomic_dir
from wsss_lib.config import config_hash
from wsss_lib.crf import CRFParams
from wsss_lib.data.datasets import SegmentationTrainDataset, decoded_images
from wsss_lib.data.ids import id_path, require_ids
from wsss_lib.data.label_png import write_label_png
from wsss_lib.data.transforms import SegmentationTrainTransform
from wsss_lib.data.voc import class_columns, read_split_table
from wsss_lib.device import loader_workers, setup_job
from wsss_lib.models.cam_net import cam_backbone_state
from wsss_lib.models.registry import load_network, save_network
from wsss_lib.models.deeplab import build_deeplab
from wsss_lib.progress import track
from wsss_lib.segmentation import PseudoLabelReader, crf_refine_many, predict_probabilities, segmentation_batch_loss
from wsss_lib.training import ResumeSpec, TrainSettings, fit

def segment_settings(opts: Mapping[str, Any], n_images: int) -> TrainSettings:
    """The shared loop's settings for ``iterations`` updates (DeepLab counts iterations, not epochs)."""
    steps_per_epoch = n_images // opts["batch_size"]
    if steps_per_epoch == 0:
        raise ValueError(f"segment.batch_size {opts['batch_size']} is larger than the {n_images} training images")
    return TrainSettings.from_config(opts, epochs=math.ceil(opts["iterations"] / steps_per_epoch),
                                     max_steps=opts["iterations"])


def init_description(pretrained: str) -> str:
    """What the backbone started from, for the result files: none, imagenet, or the weights' path."""
    return pretrained if pretrained in ("none", "imagenet") else str(Path(pretrained))


def train_deeplab(pseudo_dir: str, split_csv: str, model_out: str, log_out: str, hp: Mapping[str, Any], *,
                  weights_file: str | None = None, init_model: str | None = None, device: str = "auto",
                  threads: int = 1, resume: ResumeSpec | None = None, method: str = "") -> list[dict]:
    """Train DeepLab on the pseudo-labels ``pseudo_dir/{id}.png`` of every image of the split.

    Schedule from ``hp["segment"]`` (DeepLab-v2: poly lr 2.5e-4, 10x on the head, momentum 0.9, weight
    decay 5e-4, batch 10, crop 321, random scale 0.5-1.5 and flip, 255 ignored). The backbone starts from
    ``pretrained`` (DeepLab-v2: ImageNet) or, with ``init: cam``, from the method's CAM net ``init_model``.
    """
    opts = hp["segment"]
    dev = setup_job(device, threads, opts["seed"])
    table = read_split_table(split_csv)
    class_names = class_columns(table)
    reader = PseudoLabelReader(pseudo_dir)
    require_ids(table["id"], lambda i: id_path(pseudo_dir, i, ".png", f"split table {split_csv}").is_file(),
                "pseudo-label", split_csv, pseudo_dir)
    build_args = {"backbone": opts["backbone"], "n_classes": len(class_names) + 1,
                  "output_stride": opts["output_stride"], "head": opts["head"]}
    if opts["init"] == "cam":
        if init_model is None:
            raise ValueError("segment.init: cam needs the method's CAM model")
        model = build_deeplab(**build_args)
        model.backbone.load_state_dict(cam_backbone_state(init_model, opts["backbone"]))
    else:
        model = build_deeplab(**build_args, pretrained=opts["pretrained"], weights_file=weights_file)
    backbone = model.backbone
    transform = SegmentationTrainTransform(
        crop=opts["crop"], mean=tuple(backbone.input_mean), std=tuple(backbone.input_std),
        scale_range=tuple(opts["scale_range"]), hflip=opts["hflip"],
    )
    dataset = SegmentationTrainDataset(table["id"], table["image"], reader, transform, seed=opts["seed"])
    rows = fit(model, dataset, None, segment_settings(opts, len(dataset)), segmentation_batch_loss(),
               dev, log_out, resume)
    save_network(model_out, model.cpu(), architecture="deeplab", build_args=build_args,
                 class_names=["background", *class_names], method=method, config_hash=config_hash(dict(opts)),
                 init=f"cam:{Path(init_model)}" if opts["init"] == "cam" else init_description(opts["pretrained"]),
                 iterations=opts["iterations"], train_split=Path(split_csv).stem, n_train_images=len(dataset),
                 input_mean=list(backbone.input_mean), input_std=list(backbone.input_std))
    return rows


def _probabilities(model, meta: Mapping[str, Any], table, opts: Mapping[str, Any], dev: torch.device,
                   threads: int) -> Iterator[tuple[str, str, np.ndarray]]:
    """(id, image path, (C, H, W) float32 class probabilities) per image, one image in memory at a time."""
    paths = dict(zip(table["id"], table["image"]))
    images = decoded_images(table, meta["input_mean"], meta["input_std"], workers=loader_workers(1, threads, dev),
                            pin_memory=dev.type == "cuda")
    for image_id, image, _ in images:
        probs = predict_probabilities(model, image.to(dev, non_blocking=True), tuple(opts["scales"]), opts["flip"])
        yield image_id, paths[image_id], probs.float().cpu().numpy()


@torch.no_grad()
def infer_deeplab(model_path: str, split_csv: str, out_dir: str, hp: Mapping[str, Any], *, device: str = "auto",
                  threads: int = 1) -> None:
    """Palette-PNG predictions ``out_dir/plain/{id}.png`` (argmax of the multi-scale + flip average)
    and, with ``segment.infer.crf``, ``out_dir/crf/{id}.png`` (DeepLab's dense CRF on the same
    probabilities, run in a pool of ``threads`` processes)."""
    dev = setup_job(device, threads)
    opts = hp["segment"]["infer"]
    model, meta = load_network(model_path, "deeplab")
    model.to(dev).eval()
    table = read_split_table(split_csv)
    if len(class_columns(table)) + 1 != model.n_classes:
        raise ValueError(f"{split_csv} has {len(class_columns(table))} classes, the model {model_path} "
                         f"predicts {model.n_classes - 1} plus background")
    with atomic_dir(out_dir) as tmp:
        plain = Path(tmp) / "plain"
        plain.mkdir()

        def with_plain_written():
            for image_id, image_path, probs in _probabilities(model, meta, table, opts, dev, threads):
                write_label_png(id_path(plain, image_id, ".png", f"split table {split_csv}"),
                                probs.argmax(0).astype(np.uint8))
                yield image_id, image_path, probs

        if not opts["crf"]:
            for _ in track(with_plain_written(), "infer_deeplab", len(table)):
                pass
            return
        crf_dir = Path(tmp) / "crf"
        crf_dir.mkdir()
        params = CRFParams.from_config(hp["segment"]["crf"])
        # the CRF pool pulls predictions as it goes, so the bar counts images through both
        refined = crf_refine_many(with_plain_written(), params, processes=threads)
        for image_id, labels in track(refined, "infer_deeplab (+ CRF)", len(table)):
            write_label_png(id_path(crf_dir, image_id, ".png", f"split table {split_csv}"), labels)
