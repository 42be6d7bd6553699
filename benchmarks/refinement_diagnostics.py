"""Why do (or don't) the random-walk pseudo-labels beat the CAMs? Diagnostics of each refinement stage
on a finished run with ground-truth masks (e.g. config/voc_sample.yaml), against those masks:

* CAM and pseudo-label mIoU over every class present and over a focus set (default: background and the
  six classes the VOC sample is rich in), with per-class IoU;
* CAMs: the share of pixels above the configured threshold, and how many of them are the right class;
* confident CRF labels (AffinityNet's training labels): precision of their foreground and background;
* AffinityNet: mean affinity (and affinity^beta) of ground-truth pairs of background, of one object
  class, and of different classes: how well it separates what the walk must keep apart;
* optionally the walk itself over a grid of beta / exp_times and of backgrounds, each next to the CAM
  labels with the same background and no walk, to separate the walk's gain from the background
  calibration: PSA's power (``(1 - max CAM)^alpha`` walked with the CAMs, --sweep-alpha) and IRN's constant
  threshold against the walked CAMs divided by their maximum (--sweep-threshold).

    .venv/bin/python benchmarks/refinement_diagnostics.py --results results/voc_sample --methods baseline fmix \
        --sweep-alpha 16 --sweep-threshold 0.15 0.25 0.35 --sweep-beta 8 16 --sweep-exp 8
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from wsss_lib.affinity import neighbour_offsets, pair_affinities, pair_labels
from wsss_lib.evaluation import cams_to_labels, strongest_class
from wsss_lib.crf import IGNORE
from wsss_lib.data.label_png import read_label_png
from wsss_lib.data.transforms import downsample_labels, normalise
from wsss_lib.data.voc import read_image, read_split_table
from wsss_lib.metrics import confusion_matrix, summarise
from wsss_lib.models.registry import load_network
from wsss_lib.random_walk import random_walk_labels
from wsss_lib.store import StoreReader

FOCUS = ("background", "cat", "cow", "dog", "horse", "person", "sheep")


def focus_miou(per_class: dict, focus) -> float:
    return float(np.mean([per_class[c] for c in focus if per_class.get(c) is not None]))


def print_scores(label: str, result: dict, focus) -> None:
    iou = {k: v for k, v in result["per_class_iou"].items() if v is not None}
    print(f"  {label:<14} mIoU {result['miou']:.4f} over {len(iou)} classes, {focus_miou(iou, focus):.4f} over "
          f"{'+'.join(c[:3] for c in focus)}")
    print("    " + " ".join(f"{k}={v:.3f}" for k, v in iou.items()))


def masked_entries(store_path: str, split_csv: str):
    """(image id, image path, ground-truth mask, store entry) for every image of the split that has a mask."""
    with StoreReader(store_path) as store:
        table = read_split_table(split_csv, list(store.attrs["class_names"]))
        for image_id, image_path, mask in zip(table["id"], table["image"], table["mask"]):
            if mask:
                yield image_id, image_path, read_label_png(mask), store[image_id]


def class_names_of(store_path: str) -> list[str]:
    with StoreReader(store_path) as store:
        return ["background", *store.attrs["class_names"]]


def cam_share(store_path: str, split_csv: str, threshold: float) -> tuple[float, float, float]:
    """(share of pixels above threshold, their class precision, share of object pixels in the masks)."""
    above = correct = pixels = objects = 0
    for _, _, gt, entry in masked_entries(store_path, split_csv):
        label, peak = strongest_class(entry["high_res"].astype(np.float32), entry["keys"])
        valid = gt != IGNORE
        hit = (peak > threshold) & valid
        above += int(hit.sum())
        correct += int((label[hit] == gt[hit]).sum())
        pixels += int(valid.sum())
        objects += int(((gt != 0) & valid).sum())
    return above / pixels, correct / max(above, 1), objects / pixels


def crf_precision(store_path: str, split_csv: str) -> dict:
    counts = dict.fromkeys(("fg", "fg_right", "bg", "bg_right", "ignored", "pixels"), 0)
    for _, _, gt, entry in masked_entries(store_path, split_csv):
        labels = entry["labels"]
        valid = gt != IGNORE
        fg = (labels != 0) & (labels != IGNORE) & valid
        bg = (labels == 0) & valid
        counts["fg"] += int(fg.sum())
        counts["fg_right"] += int((labels[fg] == gt[fg]).sum())
        counts["bg"] += int(bg.sum())
        counts["bg_right"] += int((gt[bg] == 0).sum())
        counts["ignored"] += int(((labels == IGNORE) & valid).sum())
        counts["pixels"] += int(valid.sum())
    return {"foreground_precision": counts["fg_right"] / max(counts["fg"], 1),
            "background_precision": counts["bg_right"] / max(counts["bg"], 1),
            "ignored_share": counts["ignored"] / max(counts["pixels"], 1)}


@torch.no_grad()
def walk_study(model_path: str, cams_path: str, split_csv: str, alphas, thresholds, betas, exps, focus,
               beta_for_pairs: float = 8.0) -> None:
    """Ground-truth pair affinities, and the walk over the grid against plain CAM labels."""
    model, meta = load_network(model_path, "affinity_net")
    model.eval()
    offsets = neighbour_offsets(meta["radius"])
    pairs = {k: np.zeros(3) for k in ("background pairs", "same-object pairs", "different-class pairs")}
    confusions: dict[tuple, np.ndarray] = {}
    names = class_names_of(cams_path)
    backgrounds = [("power", alpha) for alpha in alphas] + [("threshold", t) for t in thresholds]
    for _, image_path, gt, entry in masked_entries(cams_path, split_csv):
        image = normalise(read_image(image_path), meta["input_mean"], meta["input_std"])[None]
        affinity = pair_affinities(model(image).float(), offsets)[0]
        coarse = torch.from_numpy(downsample_labels(gt, model.stride).astype(np.int64))
        for key, member in zip(pairs, pair_labels(coarse, offsets)):
            pairs[key] += [float((affinity * member).sum()), float((affinity ** beta_for_pairs * member).sum()),
                           float(member.sum())]
        cams, keys = entry["high_res"].astype(np.float32), entry["keys"]
        lookup = np.concatenate([[0], keys + 1]).astype(np.uint8)
        for kind, value in backgrounds:
            if kind == "power":
                plain = lookup[np.concatenate([(1 - cams.max(0, initial=0))[None] ** value, cams]).argmax(0)]
            else:
                plain = cams_to_labels(cams, keys, value)
            key = ("CAM, no walk", kind, value, "-", "-")
            confusions[key] = confusions.get(key, 0) + confusion_matrix(gt, plain, len(names))
            alpha, threshold = (value, None) if kind == "power" else (None, value)
            for beta, exp_times in itertools.product(betas, exps):
                walked = random_walk_labels(cams, keys, affinity, offsets, model.stride, alpha, beta, exp_times,
                                            background_threshold=threshold)
                key = ("walk", kind, value, beta, exp_times)
                confusions[key] = confusions.get(key, 0) + confusion_matrix(gt, walked, len(names))
    for key, (total, powered, count) in pairs.items():
        print(f"  {key:<22} {int(count):>9} pairs: mean affinity {total / count:.3f}, "
              f"mean affinity^{beta_for_pairs:g} {powered / count:.4f}")
    for (kind, background, value, beta, exp_times), conf in confusions.items():
        result = summarise(conf, names)
        iou = {k: v for k, v in result["per_class_iou"].items() if v is not None}
        setting = f"alpha {value:<5g}" if background == "power" else f"thresh {value:<4g}"
        print(f"  {kind:<13} {setting} beta {beta!s:<4} exp_times {exp_times!s:<3} mIoU {result['miou']:.4f}  "
              f"focus {focus_miou(iou, focus):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="the run's results folder, e.g. results/voc_sample")
    parser.add_argument("--methods", nargs="+", default=["baseline"])
    parser.add_argument("--eval-split", default="train", help="split the CAM and pseudo-label scores are on")
    parser.add_argument("--label-split", default="train_aug", help="split AffinityNet learned from")
    parser.add_argument("--focus", nargs="+", default=list(FOCUS))
    parser.add_argument("--threshold", type=float, default=0.15, help="CAM background threshold (eval_cams)")
    parser.add_argument("--sweep-alpha", type=float, nargs="*", default=[], help="PSA background powers")
    parser.add_argument("--sweep-threshold", type=float, nargs="*", default=[], help="IRN background thresholds")
    parser.add_argument("--sweep-beta", type=float, nargs="*", default=[8.0])
    parser.add_argument("--sweep-exp", type=int, nargs="*", default=[8])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.results)
    eval_csv, label_csv = root / "splits" / f"{args.eval_split}.csv", root / "splits" / f"{args.label_split}.csv"
    for method in args.methods:
        run = root / method
        print(f"{method}:")
        for label, path in (("CAM", run / "cam" / "miou.json"), ("pseudo-labels", run / "refine" / "miou.json")):
            if path.is_file():
                print_scores(label, json.loads(path.read_text()), args.focus)
        share, precision, objects = cam_share(str(run / "cam" / "cams.h5"), str(label_csv), args.threshold)
        print(f"  CAMs on {args.label_split}: {share:.3f} of pixels above {args.threshold} "
              f"({precision:.3f} of them the "
              f"right class); objects are {objects:.3f} of the masks")
        crf = crf_precision(str(run / "refine" / "affinity_labels.h5"), str(label_csv))
        print(f"  confident CRF labels on {args.label_split}: foreground precision {crf['foreground_precision']:.3f}, "
              f"background precision {crf['background_precision']:.3f}, ignored {crf['ignored_share']:.3f}")
        if (run / "refine" / "affinity.pt").is_file():
            walk_study(str(run / "refine" / "affinity.pt"), str(run / "cam" / "cams.h5"), str(eval_csv),
                       args.sweep_alpha, args.sweep_threshold, args.sweep_beta, args.sweep_exp, args.focus)


if __name__ == "__main__":
    main()
