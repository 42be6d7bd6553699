"""How well can this AffinityNet separate pixels at all? Train it on ground-truth masks instead of CRF labels.

PSA's AffinityNet learns from confident CRF labels; if it still barely separates classes when its labels are
the true masks, the labels are not what limits refinement: the network, its features or its schedule are.
This trains the production ``train_affinity`` (same model, loss, transform and loop) on the masks of the
training split (VOC's 255 borders stay ignored, as CRF-ignored pixels are), once per variant of the
``refine.affinity`` config, and scores each net on the held-out masks of another split:

* PSA's loss (Eq. 3-6) over the held-out ground-truth pairs within the radius, and its three parts;
* the mean affinity of held-out background pairs, same-object pairs and different-class pairs, and the
  gap between same-class and different-class pairs (PSA's trained net: close to 1 and 0).

    .venv/bin/python benchmarks/affinity_capacity.py --results results/voc_sample \\
        --configfile config/config.yaml config/voc_sample.yaml --epochs 4 \\
        --variant os16:output_stride=16 --variant os8:output_stride=8

Needs the run's split CSVs (``snakemake ... results/voc_sample/splits/train.csv``); nothing else of the run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from wsss_lib.affinity import neighbour_offsets, pair_affinities, pair_labels
from wsss_lib.config import deep_merge, method_config
from wsss_lib.data.label_png import read_label_png
from wsss_lib.data.transforms import downsample_labels, normalise
from wsss_lib.data.voc import class_columns, read_image, read_split_table
from wsss_lib.models.registry import load_network
from wsss_lib.stages.refine import train_affinity
from wsss_lib.store import open_store_writer


def parse_variant(text: str) -> tuple[str, dict]:
    """``name:key=value,key=value`` -> (name, {key: YAML-parsed value}) for ``refine.affinity``."""
    name, _, assignments = text.partition(":")
    overrides = {}
    for assignment in filter(None, assignments.split(",")):
        key, sep, value = assignment.partition("=")
        if not sep:
            raise ValueError(f"variant {text!r}: {assignment!r} is not key=value")
        overrides[key] = yaml.safe_load(value)
    return name, overrides


def masked_rows(split_csv: Path):
    table = read_split_table(split_csv)
    return table[table["mask"] != ""].reset_index(drop=True), class_columns(table)


def write_mask_store(table, class_names, path: Path) -> None:
    with open_store_writer(path, {"class_names": class_names, "source": "ground-truth masks"}) as store:
        for image_id, mask in zip(table["id"], table["mask"]):
            store.write(image_id, labels=read_label_png(mask))


@torch.no_grad()
def held_out_pairs(model_path: Path, table) -> dict:
    """PSA's loss and mean affinities over the ground-truth pairs of every image of ``table``."""
    model, meta = load_network(model_path, "affinity_net")
    model.eval()
    offsets = neighbour_offsets(meta["radius"])
    sums = np.zeros((3, 3))  # rows: bg / same-object / different-class pairs; columns: affinity, -log term, count
    for image_path, mask in zip(table["image"], table["mask"]):
        image = normalise(read_image(image_path), meta["input_mean"], meta["input_std"])[None]
        affinity = pair_affinities(model(image).float(), offsets)[0]
        coarse = torch.from_numpy(downsample_labels(read_label_png(mask), model.stride).astype(np.int64))
        # PSA's terms (as wsss_lib.affinity.affinity_loss): -log(a) for positive pairs, -log(1 - a) for negative ones
        positive, negative = -torch.log(affinity + 1e-5), -torch.log(1.0 + 1e-5 - affinity)
        for row, member in enumerate(pair_labels(coarse, offsets)):
            term = negative if row == 2 else positive
            sums[row] += [float((affinity * member).sum()), float((term * member).sum()), float(member.sum())]
    mean_affinity = sums[:, 0] / sums[:, 2]
    terms = sums[:, 1] / sums[:, 2]
    return {"loss": terms[0] / 4 + terms[1] / 4 + terms[2] / 2, "bg_loss": terms[0], "fg_loss": terms[1],
            "neg_loss": terms[2], "bg_affinity": mean_affinity[0], "same_affinity": mean_affinity[1],
            "diff_affinity": mean_affinity[2], "gap": mean_affinity[1] - mean_affinity[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="the run's results folder (for its split CSVs)")
    parser.add_argument("--configfile", nargs="+", default=["config/config.yaml", "config/voc_sample.yaml"])
    parser.add_argument("--method", default="baseline", help="whose backbone and refine.affinity settings")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--eval-split", default="val")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--variant", action="append", default=[],
                        help="name:key=value,... overriding refine.affinity (repeatable; default: the config as is)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    config: dict = {}
    for path in args.configfile:
        config = deep_merge(config, yaml.safe_load(Path(path).read_text()))
    root = Path(args.results)
    train_table, class_names = masked_rows(root / "splits" / f"{args.train_split}.csv")
    eval_table, _ = masked_rows(root / "splits" / f"{args.eval_split}.csv")
    print(f"learning from the masks of {len(train_table)} {args.train_split} images, scoring on "
          f"{len(eval_table)} {args.eval_split} images")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_table.to_csv(tmp / "train.csv", index=False)
        write_mask_store(train_table, class_names, tmp / "masks.h5")
        for name, overrides in map(parse_variant, args.variant or ["config:"]):
            hp = method_config(config, args.method)
            hp["refine"]["affinity"] = {**hp["refine"]["affinity"], "epochs": args.epochs, **overrides}
            started = time.time()
            rows = train_affinity(str(tmp / "masks.h5"), str(tmp / "train.csv"), str(tmp / f"{name}.pt"),
                                  str(tmp / f"{name}.csv"), hp, threads=args.threads, device="cpu")
            seconds = time.time() - started
            held_out = held_out_pairs(tmp / f"{name}.pt", eval_table)
            curve = " ".join(f"{row['train_loss']:.3f}" for row in rows)
            print(f"{name} ({overrides or 'as configured'}): {seconds:.0f} s; training loss by epoch {curve}")
            print(f"  held out: loss {held_out['loss']:.3f} (bg {held_out['bg_loss']:.3f}, "
                  f"fg {held_out['fg_loss']:.3f}, "
                  f"neg {held_out['neg_loss']:.3f}); mean affinity bg {held_out['bg_affinity']:.3f}, same object "
                  f"{held_out['same_affinity']:.3f}, different classes {held_out['diff_affinity']:.3f}, "
                  f"gap {held_out['gap']:.3f}", flush=True)


if __name__ == "__main__":
    main()
