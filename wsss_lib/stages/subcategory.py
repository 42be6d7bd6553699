"""Sub-category stage: image features -> per-class clusters -> a CAM net with a sub-category head.

Sub-category Exploration (SC-CAM, Chang et al. CVPR 2020) clusters the CAM net's own image features;
Sub-category Teaching (mva-wsss) clusters the embeddings of a ViT teacher fine-tuned on the image
labels. Either way the number of sub-categories is found by the clustering (FINCH, Sarfraz et al.
CVPR 2019) and read back from clusters.json: it is never typed by the user.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from wsss_lib.clustering import check_clusters, cluster_by_class
from wsss_lib.config import config_hash
from wsss_lib.data.datasets import ClassificationDataset, InferenceDataset, collate_inference
from wsss_lib.data.ids import require_ids
from wsss_lib.data.voc import class_columns, read_split_table
from wsss_lib.device import autocast, setup_job, varied_input_sizes
from wsss_lib.models.cam_net import build_cam_net
from wsss_lib.models.registry import load_network, save_network
from wsss_lib.objectives import build_batch_loss, objective_from_config
from wsss_lib.progress import Progress, summary_line
from wsss_lib.report import write_csv, write_json
from wsss_lib.stages.cam import train_transform
from wsss_lib.store import StoreReader, open_store_writer
from wsss_lib.training import ResumeSpec, TrainSettings, fit


def train_teacher(train_csv: str, val_csv: str, model_out: str, log_out: str, teacher: Mapping[str, Any], *,
                  device: str = "auto", threads: int = 1, weights_file: str | None = None,
                  resume: ResumeSpec | None = None, method: str = "") -> list[dict]:
    """Fine-tune the ViT teacher on the image-level labels with the shared training loop."""
    # the ViT module imports torchvision (~2 s a process), which only the teacher's jobs need
    from wsss_lib.models.vit import build_vit

    dev = setup_job(device, threads, teacher["seed"])
    train_table, val_table = read_split_table(train_csv), read_split_table(val_csv)
    class_names = class_columns(train_table)
    build_args = {"preset": teacher["preset"], "n_classes": len(class_names), "image_size": teacher["image_size"]}
    model = build_vit(**build_args, pretrained=teacher["pretrained"], weights_file=weights_file)
    opts = {**teacher, "freeze_bn": False, "crop": teacher["image_size"]}

    def vit_loss(model, images, labels, generator):
        return F.multilabel_soft_margin_loss(model(images), labels), {}

    val_set = InferenceDataset(val_table, model.input_mean, model.input_std, size=teacher["image_size"])
    rows = fit(
        model, ClassificationDataset(train_table, train_transform(opts, model.input_mean, model.input_std),
                                     seed=teacher["seed"]),
        val_set, TrainSettings.from_config(opts), vit_loss, dev, log_out, resume,
    )
    save_network(model_out, model.cpu(), architecture="vit", build_args=build_args, class_names=class_names,
                 method=method, config_hash=config_hash(dict(teacher)))
    return rows


@torch.no_grad()
def extract_features(model_path: str, split_csv: str, store_out: str, *, kind: str, device: str = "auto",
                     threads: int = 1, batch_size: int = 8, method: str = "", round_index: int = 0) -> None:
    """One feature vector per image: the CAM net's pooled features (``cam``) or the ViT embedding (``vit``)."""
    dev = setup_job(device, threads)
    if kind not in ("cam", "vit"):
        raise ValueError(f"unknown feature kind {kind!r}; choose cam or vit")
    model, meta = load_network(model_path, {"cam": "cam_net", "vit": "vit"}[kind])
    if kind == "cam":
        dataset = InferenceDataset(read_split_table(split_csv, meta["class_names"]), meta["input_mean"],
                                   meta["input_std"])
        embed = model.pooled_features
    else:
        dataset = InferenceDataset(read_split_table(split_csv, meta["class_names"]), model.input_mean,
                                   model.input_std, size=model.image_size)
        embed = model.embed
    model.to(dev).eval()
    loader = DataLoader(dataset, batch_sampler=dataset.batches(batch_size), collate_fn=collate_inference)
    attrs = {"method": method, "model": str(model_path), "kind": kind, "round": round_index,
             "model_config_hash": meta.get("config_hash", "")}
    with open_store_writer(store_out, attrs) as store, varied_input_sizes(dev), \
            Progress("extract_features", len(dataset)) as progress:
        for ids, images, _ in loader:
            with autocast(dev):
                features = embed(images.to(dev)).float().cpu().numpy()
            for image_id, feature in zip(ids, features):
                store.write(image_id, feature=feature.astype(np.float32))
            progress.update(len(ids))


def cluster_features(store_path: str, split_csv: str, csv_out: str, json_out: str,
                     clustering: Mapping[str, Any]) -> dict:
    """Cluster each class's images into sub-categories; write clusters.csv and clusters.json."""
    started = time.perf_counter()
    table = read_split_table(split_csv)
    class_names = class_columns(table)
    with StoreReader(store_path) as store:
        require_ids(table["id"], store.__contains__, "features", split_csv, store_path)
        features = np.stack([store[i]["feature"] for i in table["id"]])
    clusters, info = cluster_by_class(
        table["id"].tolist(), features, table[class_names].to_numpy(), class_names,
        method=clustering["method"], level=clustering["level"], n_clusters=clustering["n_clusters"],
        distance=clustering["distance"], seed=clustering["seed"])
    check_clusters(clusters, info)
    write_csv(clusters, csv_out)
    write_json(info, json_out)
    print(summary_line(f"cluster_features ({info['total']} sub-categories)", len(table),
                       time.perf_counter() - started), flush=True)
    return info


def read_cluster_count(json_path: str | Path) -> int:
    info = json.loads(Path(json_path).read_text())
    if "total" not in info or not isinstance(info["total"], int):
        raise ValueError(f"clusters file {json_path} has no integer 'total'")
    return info["total"]


def train_subcategory(train_csv: str, val_csv: str, clusters_csv: str, clusters_json: str, init_model: str | None,
                      model_out: str, log_out: str, hp: Mapping[str, Any], *, n_subcategories: int,
                      weights_file: str | None = None, device: str = "auto", threads: int = 1,
                      resume: ResumeSpec | None = None, method: str = "", round_index: int = 1) -> list[dict]:
    """Retrain the CAM net with a sub-category head sized from clusters.json.

    The net starts from ``init_model`` (the previous round's, ``subcategory.round_init: previous``) or,
    with ``init_model=None``, from the backbone's pretrained weights (``hp["pretrained"]``, a fetched
    ``weights_file``) as SC-CAM (Sec. 3.3: each round re-trains from ImageNet) and mva-wsss
    (train_cam_clusters.py without --load_model) do. Loss = parent multi-label loss + weight *
    sub-category multi-label loss (SC-CAM Sec. 3).
    """
    opts = hp["train_cam"]
    dev = setup_job(device, threads, opts["seed"] + round_index)
    found = read_cluster_count(clusters_json)
    if found != n_subcategories:
        raise ValueError(f"{clusters_json} holds {found} sub-categories but the job was scheduled with "
                         f"{n_subcategories}; rerun the workflow so the checkpoint is re-read")
    clusters = pd.read_csv(clusters_csv, dtype={"id": str})
    check_clusters(clusters, json.loads(Path(clusters_json).read_text()))
    train_table = read_split_table(train_csv)
    class_names = class_columns(train_table)
    merged = train_table.merge(clusters, on="id", how="left", validate="one_to_one")
    if merged[clusters.columns[1:]].isna().any().any():
        raise ValueError(f"{clusters_csv} lacks sub-categories for some images of {train_csv}")
    sub_columns = list(clusters.columns[1:])
    merged[sub_columns] = merged[sub_columns].astype(int)

    if init_model is None:
        build_args = {"backbone": hp["backbone"], "n_classes": len(class_names), "output_stride": hp["output_stride"],
                      "n_subcategories": n_subcategories}
        model = build_cam_net(**build_args, pretrained=hp["pretrained"], weights_file=weights_file)
        mean, std = model.backbone.input_mean, model.backbone.input_std
        start = f"pretrained: {hp['pretrained']}"
    else:
        initial, init_meta = load_network(init_model, "cam_net")
        build_args = {**init_meta["build_args"], "n_classes": len(class_names), "n_subcategories": n_subcategories}
        model = build_cam_net(**build_args)
        state = {k: v for k, v in initial.state_dict().items() if not k.startswith("sub_classifier.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("sub_classifier.") for k in missing):
            raise ValueError(f"{init_model} does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        mean, std = init_meta["input_mean"], init_meta["input_std"]
        start = f"round {round_index - 1}: {init_model}"
    rows = fit(
        model, ClassificationDataset(merged, train_transform(opts, mean, std), seed=opts["seed"] + round_index),
        InferenceDataset(read_split_table(val_csv, class_names), mean, std), TrainSettings.from_config(opts),
        build_batch_loss(objective_from_config(opts, hp["subcategory"]["weight"])), dev,
        log_out, resume,
    )
    save_network(model_out, model.cpu(), architecture="cam_net", build_args=build_args, class_names=class_names,
                 method=method, config_hash=config_hash(dict(hp)), pretrained=start, input_mean=list(mean),
                 input_std=list(std), round=round_index, subcategory_columns=sub_columns)
    return rows
