"""Figure jobs: read a method's stored outputs and draw them (wsss_lib/figures.py).

Every method shows the same images (config ``figures``: the first ``n_images`` of ``split`` that have a mask,
or the listed ``ids``), so the per-method grids and the cross-method grid can be read side by side.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from wsss_lib.data.ids import id_path
from wsss_lib.data.label_png import read_label_png
from wsss_lib.data.voc import class_columns, read_image, read_split_table
from wsss_lib.figures import (Example, cam_comparison_grid, example_grid, per_class_iou_bars, stage_bars,
                              subcategory_grid, threshold_sweep, training_curves)
from wsss_lib.report import read_checked_result
from wsss_lib.store import StoreReader


def figure_rows(split_csv: str, opts: Mapping[str, Any]) -> pd.DataFrame:
    """The split's rows to draw: ``opts['ids']`` in their order, else the first ``n_images`` with a mask."""
    table = read_split_table(split_csv)
    if opts["ids"]:
        missing = [i for i in opts["ids"] if i not in set(table["id"])]
        if missing:
            raise ValueError(f"figures.ids {missing} are not in {split_csv}")
        return table.set_index("id", drop=False).loc[list(opts["ids"])].reset_index(drop=True)
    with_mask = table[table["mask"] != ""]
    return (with_mask if len(with_mask) else table).head(opts["n_images"]).reset_index(drop=True)


def _truth(row) -> np.ndarray | None:
    return read_label_png(row.mask) if row.mask else None


def _cams(store: StoreReader, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    entry = store[image_id]
    return entry["high_res"].astype(np.float32), entry["keys"].astype(int)


def training_job_title(name: str) -> str:
    """A row title for a name of rules/common.smk's training_logs(): classifier, teacher, round<r>, affinity,
    deeplab."""
    titles = {"classifier": "CAM classifier", "teacher": "ViT teacher", "affinity": "AffinityNet", "deeplab": "DeepLab"}
    return titles.get(name) or f"sub-category round {name.removeprefix('round')}"


def plot_training(logs: Sequence[tuple[str, str]], out: str, title: str) -> None:
    """``logs``: (job name, train_log.csv) in pipeline order."""
    training_curves([(name, pd.read_csv(path)) for name, path in logs], out, title)


def plot_scores(method_result: str, cam_result: str, iou_out: str, sweep_out: str, method: str) -> None:
    result = read_checked_result(method_result, ("cam", "pseudo_label", "segmentation"))
    per_class_iou_bars(result, iou_out, f"{method}: per-class IoU")
    threshold_sweep(read_checked_result(cam_result, ("sweep", "threshold", "best_threshold", "miou")), sweep_out,
                    f"{method}: CAM mIoU against the background threshold")


def plot_examples(split_csv: str, opts: Mapping[str, Any], cams_store: str, labels_store: str, pseudo_dir: str,
                  seg_model: str | None, hp: Mapping[str, Any], out: str, method: str) -> None:
    """The example grid of one method: its CAMs, confident CRF labels, pseudo-labels and DeepLab predictions
    (plain, without the CRF: what the network learned) for the figure images. Without ``seg_model`` (a run
    stopped at the pseudo-labels) the prediction column stays blank."""
    import torch  # DeepLab's predictions only: the other figure jobs start without torch

    from wsss_lib.data.transforms import normalise
    from wsss_lib.device import setup_job
    from wsss_lib.models.registry import load_network
    from wsss_lib.segmentation import predict_probabilities

    setup_job("cpu", 1)
    model, meta = load_network(seg_model, "deeplab") if seg_model else (None, None)
    if model is not None:
        model.eval()
    infer = hp["segment"]["infer"]
    examples = []
    with StoreReader(cams_store) as cams, StoreReader(labels_store) as crf, torch.no_grad():
        class_names = list(cams.attrs["class_names"])
        for row in figure_rows(split_csv, opts).itertuples(index=False):
            image = read_image(row.image)
            prediction = None
            if model is not None:
                probabilities = predict_probabilities(model, normalise(image, meta["input_mean"], meta["input_std"]),
                                                      tuple(infer["scales"]), infer["flip"])
                prediction = probabilities.argmax(0).numpy().astype(np.uint8)
            pseudo = id_path(pseudo_dir, row.id, ".png", f"split table {split_csv}")
            heat, keys = _cams(cams, row.id)
            examples.append(Example(
                row.id, image, _truth(row), heat, keys,
                crf=crf[row.id]["labels"] if row.id in crf else None,
                pseudo=read_label_png(pseudo) if pseudo.is_file() else None,
                prediction=prediction))
    example_grid(examples, class_names, out, f"{method}: CAMs and labels of the same images at every stage")


def plot_subcategories(clusters_csv: str, split_csv: str, out: str, per_row: int, title: str) -> None:
    clusters = pd.read_csv(clusters_csv, dtype={"id": str})
    paths = dict(zip(*read_split_table(split_csv)[["id", "image"]].to_numpy().T))
    missing = [i for i in clusters["id"] if i not in paths]
    if missing:
        raise ValueError(f"{clusters_csv} lists images not in {split_csv}, e.g. {missing[:3]}")
    shown = set()
    for column in clusters.columns[1:]:
        shown.update(clusters.loc[clusters[column] == 1, "id"].head(per_row))
    thumbnails = {}
    for image_id in shown:
        image = Image.fromarray(read_image(paths[image_id]))
        image.thumbnail((64, 64))
        thumbnails[image_id] = np.asarray(image)
    subcategory_grid(clusters, thumbnails, out, per_row, title)


def plot_stage_miou(summary_csv: str, out: str, dataset: str) -> None:
    stage_bars(pd.read_csv(summary_csv), out, f"mIoU per method and stage ({dataset})")


def plot_cam_comparison(split_csv: str, opts: Mapping[str, Any], cams_stores: Mapping[str, str], out: str) -> None:
    """The figure images' CAMs, one column per method (``cams_stores``: method -> cams.h5)."""
    rows = figure_rows(split_csv, opts)
    examples = {}
    class_names: list[str] = []
    for method, path in cams_stores.items():
        with StoreReader(path) as store:
            class_names = list(store.attrs["class_names"])
            examples[method] = [Example(row.id, read_image(row.image), _truth(row), *_cams(store, row.id))
                                for row in rows.itertuples(index=False)]
    if class_columns(read_split_table(split_csv)) != class_names:
        raise ValueError(f"{split_csv} and the CAM stores disagree on the classes")
    cam_comparison_grid(examples, class_names, out, "CAMs of the same images, method by method")
