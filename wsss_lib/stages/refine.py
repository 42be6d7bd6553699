"""Refinement stage (PSA: Ahn & Kwak, CVPR 2018): CAMs -> confident CRF labels -> AffinityNet ->
random walk -> pseudo-labels, for any method's CAM store (no method-specific code)."""

from __future__ import annotations

import json
import time
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from wsss_lib.affinity import affinity_loss, neighbour_offsets, pair_affinities, pair_labels
from wsss_lib.atomic import atomic_dir
from wsss_lib.config import config_hash
from wsss_lib.crf import IGNORE, CRFParams, CRFTask, confident_labels_many
from wsss_lib.data.datasets import SegmentationTrainDataset, decoded_images
from wsss_lib.data.ids import id_path, require_ids
from wsss_lib.data.label_png import read_label_png, write_label_png
from wsss_lib.data.transforms import SegmentationTrainTransform
from wsss_lib.data.voc import read_split_table, read_split_tables
from wsss_lib.device import autocast, loader_workers, setup_job, varied_input_sizes
from wsss_lib.models.affinity_net import build_affinity_net
from wsss_lib.models.cam_net import cam_backbone_state
from wsss_lib.models.registry import load_network, save_network
from wsss_lib.progress import track
from wsss_lib.random_walk import random_walk_labels
from wsss_lib.store import StoreArrays, StoreReader, open_store_writer
from wsss_lib.training import ResumeSpec, TrainSettings, fit


def _split_with_cams(split_csvs: str | Sequence[str], store: StoreReader):
    """The split(s)' rows, checked to have CAMs in the store (same class list, every image present)."""
    class_names = list(store.attrs["class_names"])
    table = read_split_tables(split_csvs, class_names)
    require_ids(table["id"], store.__contains__, "CAMs", split_csvs, store.path)
    return table, class_names


def crf_labels(cams_store: str, split_csv: str, store_out: str, hp: Mapping[str, Any], *, threads: int = 1,
               method: str = "") -> dict:
    """PSA's affinity labels for every image of the split: confident foreground from a dense CRF on the
    CAMs with a low background power, confident background from one with a high power, the rest ignored.

    Images run in a pool of ``threads`` processes; the labels are identical to a serial run. Returns
    (and stores as attributes) how much of the image got a label and, where masks exist, how often the
    confident labels agree with them.
    """
    opts = hp["refine"]["crf"]
    params = CRFParams.from_config({k: v for k, v in opts.items() if k not in ("low_alpha", "high_alpha")})
    started = time.time()
    with StoreReader(cams_store) as cams:
        table, class_names = _split_with_cams(split_csv, cams)

        def tasks() -> Iterator[CRFTask]:
            for image_id, image_path in zip(table["id"], table["image"]):
                entry = cams[image_id]
                yield CRFTask(image_id, image_path, entry["high_res"], entry["keys"])

        masks = dict(zip(table["id"], table["mask"]))
        counts = {"pixels": 0, "foreground": 0, "background": 0, "scored": 0, "correct": 0}
        attrs = {"method": method, "cams": str(cams_store), "config_hash": config_hash(dict(opts)),
                 "class_names": class_names, **{k: v for k, v in opts.items()}}
        with open_store_writer(store_out, attrs) as out:
            labelled = confident_labels_many(tasks(), opts["low_alpha"], opts["high_alpha"], params, processes=threads)
            for image_id, labels in track(labelled, "crf_labels", len(table)):
                out.write(image_id, labels=labels)
                counts["pixels"] += labels.size
                counts["foreground"] += int(((labels != 0) & (labels != IGNORE)).sum())
                counts["background"] += int((labels == 0).sum())
                if masks[image_id]:
                    gt = read_label_png(masks[image_id])
                    scored = (labels != IGNORE) & (gt != IGNORE)
                    counts["scored"] += int(scored.sum())
                    counts["correct"] += int((labels[scored] == gt[scored]).sum())
            stats = {
                "n_images": len(table),
                "foreground_fraction": counts["foreground"] / max(counts["pixels"], 1),
                "background_fraction": counts["background"] / max(counts["pixels"], 1),
                "ignored_fraction": 1 - (counts["foreground"] + counts["background"]) / max(counts["pixels"], 1),
                "agreement_with_masks": counts["correct"] / counts["scored"] if counts["scored"] else float("nan"),
                "seconds": time.time() - started,
            }
            out.set_attrs(**stats)
    # the log line is strict JSON: agreement is null, not NaN, where no image had a mask to agree with
    print(json.dumps({**stats, "agreement_with_masks": stats["agreement_with_masks"] if counts["scored"] else None},
                     allow_nan=False), flush=True)
    return stats


def affinity_batch_loss(radius: int):
    """The shared loop's BatchLoss for AffinityNet: PSA's balanced loss over the pairs within ``radius``."""
    offsets = neighbour_offsets(radius)

    def batch_loss(model, images, labels, generator):
        bg_pos, fg_pos, neg = pair_labels(labels, offsets)
        return affinity_loss(pair_affinities(model(images).float(), offsets), bg_pos, fg_pos, neg)

    return batch_loss


def train_affinity(labels_store: str, split_csv: str, model_out: str, log_out: str, hp: Mapping[str, Any], *,
                   init_model: str | None = None, weights_file: str | None = None, device: str = "auto",
                   threads: int = 1, resume: ResumeSpec | None = None, method: str = "") -> list[dict]:
    """Train AffinityNet on the confident CRF labels with the shared training loop (PSA's schedule).

    The backbone starts from the method's ``pretrained`` weights (PSA: ImageNet) or, with
    ``init: cam``, from the method's final CAM net (useful for from-scratch backbones).
    """
    opts = hp["refine"]["affinity"]
    dev = setup_job(device, threads, opts["seed"])
    with StoreReader(labels_store) as store:
        class_names = list(store.attrs["class_names"])
        table = read_split_table(split_csv, class_names)
        require_ids(table["id"], store.__contains__, "labels", split_csv, labels_store)
    build_args = {"backbone": hp["backbone"], "output_stride": opts["output_stride"], "stride": opts["stride"]}
    if opts["init"] == "cam":
        if init_model is None:
            raise ValueError("refine.affinity.init: cam needs the method's CAM model")
        model = build_affinity_net(**build_args)
        model.backbone.load_state_dict(cam_backbone_state(init_model, hp["backbone"]))
    else:
        model = build_affinity_net(**build_args, pretrained=hp["pretrained"], weights_file=weights_file)
    backbone = model.backbone
    transform = SegmentationTrainTransform(
        crop=opts["crop"], mean=tuple(backbone.input_mean), std=tuple(backbone.input_std),
        resize_long_range=tuple(opts["resize_long"]) if opts["resize_long"] else None, hflip=opts["hflip"],
        color_jitter=tuple(opts["color_jitter"]), label_stride=opts["stride"],
    )
    dataset = SegmentationTrainDataset(table["id"], table["image"], StoreArrays(labels_store, "labels"), transform,
                                       seed=opts["seed"])
    rows = fit(model, dataset, None, TrainSettings.from_config(opts), affinity_batch_loss(opts["radius"]),
               dev, log_out, resume)
    save_network(model_out, model.cpu(), architecture="affinity_net", build_args=build_args, radius=opts["radius"],
                 class_names=class_names, method=method, config_hash=config_hash(dict(opts)), init=opts["init"],
                 init_model=str(init_model) if opts["init"] == "cam" else None,
                 input_mean=list(backbone.input_mean), input_std=list(backbone.input_std))
    return rows


@torch.no_grad()
def random_walk(affinity_model: str, cams_store: str, split_csvs: str | Sequence[str], out_dir: str,
                hp: Mapping[str, Any], *, device: str = "auto", threads: int = 1) -> None:
    """Pseudo-label PNGs ``out_dir/{id}.png``: each image's CAMs propagated by the random walk over
    AffinityNet's affinities, then arg-maxed against the configured background (PSA Sec. 3.5: a
    (1 - max)^alpha score walked with the CAMs; IRN: a constant threshold after the walk)."""
    dev = setup_job(device, threads)
    opts = hp["refine"]["random_walk"]
    alpha = opts["alpha"] if opts["background"] == "power" else None
    threshold = opts["threshold"] if opts["background"] == "threshold" else None
    model, meta = load_network(affinity_model, "affinity_net")
    model.to(dev).eval()
    offsets = neighbour_offsets(meta["radius"])
    with StoreReader(cams_store) as cams, atomic_dir(out_dir) as tmp, varied_input_sizes(dev):
        table, _ = _split_with_cams(split_csvs, cams)
        images = decoded_images(table, meta["input_mean"], meta["input_std"], workers=loader_workers(1, threads, dev),
                                pin_memory=dev.type == "cuda")
        for image_id, image, _ in track(images, "random_walk", len(table)):
            image = image[None].to(dev, non_blocking=True)
            with autocast(dev):
                embedding = model(image)
            affinities = pair_affinities(embedding.float(), offsets)[0]
            entry = cams[image_id]
            cam = entry["high_res"].astype(np.float32)
            if cam.shape[-2:] != tuple(image.shape[-2:]):
                raise ValueError(f"CAMs of {image_id} in {cams_store} are {cam.shape[-2:]}, "
                                 f"its image is {tuple(image.shape[-2:])}")
            labels = random_walk_labels(cam, entry["keys"], affinities, offsets, model.stride, alpha,
                                        opts["beta"], opts["exp_times"], background_threshold=threshold)
            write_label_png(id_path(tmp, image_id, ".png", f"CAM store {cams_store}"), labels)
