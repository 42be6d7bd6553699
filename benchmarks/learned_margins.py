"""Margins of the tiny workflow's learned-quality assertions across seeds.

tests/test_workflow.py runs the baseline chain on a tiny synthetic set (conftest.TINY_SYNTHETIC, seed 0)
and asserts learned quantities against baselines of the same run: CAM mIoU above the all-background
prediction by a margin, CRF labels above chance, pseudo-labels and DeepLab above all-background. This
reruns that chain with other dataset and training seeds (every ``seed`` of the chain set to s) and prints
each quantity beside its baseline, so that a margin in a test is one measured to hold, not a guess.

    .venv/bin/python benchmarks/learned_margins.py --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import TINY_SYNTHETIC, run_snakemake  # noqa: E402
from test_workflow import deeplab_fit_to_pseudo_labels  # noqa: E402
from wsss_lib.data.label_png import read_label_png  # noqa: E402
from wsss_lib.store import StoreReader  # noqa: E402


def seeded_overlay(seed: int) -> dict:
    overlay = copy.deepcopy(TINY_SYNTHETIC)
    overlay["synthetic"]["seed"] = seed
    hparams = overlay["synthetic"]["hparams"]
    for section in (hparams["train_cam"], hparams["refine"]["affinity"], hparams["segment"]):
        section["seed"] = seed
    return overlay


def margins(workdir: Path) -> dict:
    results = workdir / "results/baseline"
    cam = json.loads((results / "cam/miou.json").read_text())
    pseudo = json.loads((results / "refine/miou.json").read_text())
    seg = json.loads((results / "seg/miou.json").read_text())
    with StoreReader(results / "refine/affinity_labels.h5") as labels:
        agreement = float(labels.attrs["agreement_with_masks"])
        ignored = float(labels.attrs["ignored_fraction"])
    masks = [read_label_png(workdir / p) for p in pd.read_csv(workdir / "results/splits/val.csv")["mask"]]
    valid = np.concatenate([m[m != 255] for m in masks])
    val_all_background = float((valid == 0).mean() / len(seg["classes_present"]))
    fit, majority = deeplab_fit_to_pseudo_labels(workdir)
    return {
        "seg_fit": fit, "pseudo_majority": majority,
        "cam_miou": cam["miou"], "cam_best_miou": cam["best_miou"], "train_all_background": cam["all_background_miou"],
        "crf_agreement": agreement, "crf_ignored": ignored, "pseudo_miou": pseudo["miou"],
        "seg_miou": seg["miou"], "val_all_background": val_all_background,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            run_snakemake(Path(tmp), "--cores", str(args.cores), "results/baseline/miou.json",
                          overlay=seeded_overlay(seed))
            row = {"seed": seed, **margins(Path(tmp)), "seconds": round(time.perf_counter() - start)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows).set_index("seed")
    table["cam_margin"] = table.cam_miou - table.train_all_background
    table["cam_best_margin"] = table.cam_best_miou - table.train_all_background
    table["pseudo_margin"] = table.pseudo_miou - table.train_all_background
    table["seg_margin"] = table.seg_miou - table.val_all_background
    table["fit_margin"] = table.seg_fit - table.pseudo_majority
    print(table.round(3).to_string())
    print("minimum over seeds:")
    columns = ["cam_margin", "cam_best_margin", "pseudo_margin", "seg_margin", "fit_margin", "crf_agreement"]
    print(table[columns].min().round(3).to_string())


if __name__ == "__main__":
    main()
