"""CAM stage: train the classifier, write multi-scale CAMs to an HDF5 store, evaluate them."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsss_lib.cams import multiscale_cams, normalise_by_max
from wsss_lib.config import config_hash
from wsss_lib.data.datasets import ClassificationDataset, InferenceDataset, collate_inference
from wsss_lib.data.transforms import ClassificationTrainTransform
from wsss_lib.data.voc import class_columns, read_split_table, read_split_tables, require_same_classes
from wsss_lib.device import autocast, loader_workers, place_model, setup_job, to_device, varied_input_sizes
from wsss_lib.models.cam_net import build_cam_net
from wsss_lib.models.registry import load_network, save_network
from wsss_lib.store import open_store_writer
from wsss_lib.objectives import build_batch_loss, objective_from_config
from wsss_lib.progress import Progress
from wsss_lib.training import ResumeSpec, TrainSettings, fit


def train_transform(opts: Mapping[str, Any], mean, std) -> ClassificationTrainTransform:
    return ClassificationTrainTransform(
        crop=opts["crop"], resize_long_range=tuple(opts["resize_long"]), hflip=opts["hflip"],
        color_jitter=tuple(opts["color_jitter"]), mean=tuple(mean), std=tuple(std),
    )


def train_cam(train_csv: str, val_csv: str, model_out: str, log_out: str, hp: Mapping[str, Any], *,
              device: str = "auto", threads: int = 1, weights_file: str | None = None,
              resume: ResumeSpec | None = None, method: str = "") -> list[dict]:
    """Train the CAM classifier of one method (Zhou et al. 2016 GAP classifier, PSA/IRN schedule).

    The method's mixing strategy and regularisers come from ``hp["train_cam"]`` (see objectives.py).
    """
    opts = hp["train_cam"]
    dev = setup_job(device, threads, opts["seed"])
    train_table, val_table = read_split_table(train_csv), read_split_table(val_csv)
    # the net's outputs follow train's class columns; a val table with others would be scored against the wrong ones
    require_same_classes([train_csv, val_csv], [train_table, val_table])
    class_names = class_columns(train_table)
    build_args = {"backbone": hp["backbone"], "n_classes": len(class_names), "output_stride": hp["output_stride"]}
    model = build_cam_net(**build_args, pretrained=hp["pretrained"], weights_file=weights_file)
    backbone = model.backbone
    rows = fit(
        model, ClassificationDataset(train_table, train_transform(opts, backbone.input_mean, backbone.input_std),
                                     seed=opts["seed"]),
        InferenceDataset(val_table, backbone.input_mean, backbone.input_std), TrainSettings.from_config(opts),
        build_batch_loss(objective_from_config(opts)), dev, log_out, resume,
    )
    save_network(model_out, model.cpu(), architecture="cam_net", build_args=build_args, class_names=class_names,
                 method=method, config_hash=config_hash(dict(hp)), pretrained=str(hp["pretrained"]),
                 input_mean=list(backbone.input_mean), input_std=list(backbone.input_std))
    return rows


def make_cams(model_path: str, split_csvs: str | Sequence[str], store_out: str, hp: Mapping[str, Any], *,
              device: str = "auto", threads: int = 1, method: str = "") -> None:
    """Multi-scale + flip CAMs for every image of the split(s), for the classes in its image-level labels."""
    dev = setup_job(device, threads)
    opts = hp["make_cams"]
    model, meta = load_network(model_path, "cam_net")
    channels_last = place_model(model, dev)
    model.eval()
    table = read_split_tables(split_csvs, meta["class_names"])
    dataset = InferenceDataset(table, meta["input_mean"], meta["input_std"])
    loader = DataLoader(dataset, batch_sampler=dataset.batches(opts["batch_size"]), collate_fn=collate_inference,
                        num_workers=loader_workers(opts["num_workers"], threads, dev), pin_memory=dev.type == "cuda")
    attrs = {"method": method, "model": str(model_path), "model_config_hash": meta["config_hash"],
             "config_hash": config_hash(dict(opts)), "scales": list(opts["scales"]), "flip": opts["flip"],
             "strided_stride": opts["strided_stride"], "class_names": list(meta["class_names"])}
    with open_store_writer(store_out, attrs) as store, torch.no_grad(), varied_input_sizes(dev), \
            Progress("make_cams", len(table)) as progress:
        for ids, images, labels in loader:
            with autocast(dev):
                strided, high_res = multiscale_cams(model, to_device(images, dev, channels_last), opts["scales"],
                                                    opts["flip"], opts["strided_stride"])
            strided, high_res = normalise_by_max(strided).cpu(), normalise_by_max(high_res).cpu()
            for i, image_id in enumerate(ids):
                keys = torch.nonzero(labels[i]).flatten()
                store.write(image_id, keys=keys.numpy().astype(np.int16),
                            cam=strided[i, keys].numpy().astype(np.float16),
                            high_res=high_res[i, keys].numpy().astype(np.float16))
            progress.update(len(ids))
