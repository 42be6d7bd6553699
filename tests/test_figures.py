"""Figures: palette colours, overlays, and what each chart draws, checked against the values it was given."""

import numpy as np
import pandas as pd
from PIL import Image

from wsss_lib.figures import (Example, class_overlay, colour_labels, example_grid, heat_overlay, legend_handles,
                              per_class_iou_bars, stage_bars, subcategory_grid, threshold_sweep, training_curves)

CLASSES = ["aeroplane", "bicycle", "bird"]


def test_label_colours_are_the_voc_palette():
    labels = np.array([[0, 1], [3, 255]], dtype=np.uint8)
    # PASCAL VOC's devkit colour map: background black, aeroplane (128, 0, 0), bird (128, 128, 0), void cream
    assert colour_labels(labels).tolist() == [[[0, 0, 0], [128, 0, 0]], [[128, 128, 0], [224, 224, 192]]]


def test_class_overlay_tints_each_pixel_with_its_strongest_class_by_its_strength():
    image = np.full((2, 2, 3), 102, np.uint8)  # grey 0.4
    cams = np.zeros((2, 2, 2), np.float32)  # (class, row, column) for the class keys [0, 2]
    cams[0, 0, 0] = 1.0  # pixel (0, 0): aeroplane at full strength
    cams[1, 0, 1] = 0.5  # pixel (0, 1): bird at half strength beats aeroplane's 0.2
    cams[0, 0, 1] = 0.2
    overlay = class_overlay(image, cams, np.array([0, 2]))
    np.testing.assert_allclose(overlay[0, 0], [128 / 255, 0, 0], atol=1e-6)
    np.testing.assert_allclose(overlay[0, 1],
                               0.5 * np.array([102, 102, 102]) / 255 + 0.5 * np.array([128, 128, 0]) / 255,
                               atol=1e-6)
    np.testing.assert_allclose(overlay[1], np.full((2, 3), 102 / 255), atol=1e-6)  # no class fires: the grey image


def test_heat_overlay_blends_jet_over_the_image():
    image = np.full((1, 2, 3), 255, np.uint8)
    heat = np.array([[0.0, 1.0]])
    np.testing.assert_allclose(heat_overlay(image, heat, weight=0.0), np.ones((1, 2, 3)))
    # matplotlib's jet: dark blue (0, 0, 0.5) at 0, dark red (0.5, 0, 0) at 1
    np.testing.assert_allclose(heat_overlay(image, heat, weight=1.0), [[[0, 0, 0.5], [0.5, 0, 0]]], atol=1e-6)


def test_legend_names_the_labels_shown():
    names = [handle.get_label() for handle in legend_handles([255, 2, 0, 2], CLASSES)]
    assert names == ["background", "bicycle", "ignored"]


def png_colours(path) -> set[tuple[int, int, int]]:
    with Image.open(path) as image:
        return set(map(tuple, np.asarray(image.convert("RGB")).reshape(-1, 3).tolist()))


def test_example_grid_draws_label_maps_in_the_palette(tmp_path):
    rng = np.random.default_rng(0)
    truth = np.zeros((32, 32), np.uint8)
    truth[8:24, 8:24] = 3
    crf = truth.copy()
    crf[:4] = 255
    example = Example("img1", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), truth,
                      cams=rng.random((1, 32, 32)).astype(np.float32), keys=np.array([2]), crf=crf,
                      pseudo=truth, prediction=None)
    figure = example_grid([example, example], CLASSES, tmp_path / "grid.png")
    colours = png_colours(tmp_path / "grid.png")
    assert {(128, 128, 0), (224, 224, 192), (0, 0, 0)} <= colours  # bird, ignored, background panels
    titles = [axis.get_title() for axis in figure.axes]
    assert titles[:5] == ["img1", "CAM: bird", "confident CRF label", "pseudo-label", ""]  # no prediction: blank
    assert [t.get_text() for t in figure.legends[0].texts] == ["background", "bird", "ignored"]


def test_per_class_bars_are_the_stages_iou(tmp_path):
    result = {stage: {"miou": miou, "split": split, "per_class_iou": ious} for stage, miou, split, ious in (
        ("cam", 0.4, "train", {"background": 0.7, "aeroplane": 0.1, "bicycle": None}),
        ("pseudo_label", 0.5, "train", {"background": 0.8, "aeroplane": 0.2, "bicycle": None}),
        ("segmentation", 0.6, "val", {"background": 0.9, "aeroplane": 0.3, "bicycle": 0.6}))}
    figure = per_class_iou_bars(result, tmp_path / "iou.png")
    axis = figure.axes[0]
    heights = [bar.get_height() for bar in axis.patches]
    # three stages x three classes, stage by stage; an absent class is an empty (NaN) bar
    np.testing.assert_allclose(heights, [0.7, 0.1, np.nan, 0.8, 0.2, np.nan, 0.9, 0.3, 0.6])
    assert [t.get_text() for t in axis.get_xticklabels()] == ["background", "aeroplane", "bicycle"]
    assert axis.get_legend().texts[2].get_text() == "segmentation (val): 60.0"


def test_threshold_sweep_marks_the_configured_and_the_best_threshold(tmp_path):
    cam = {"sweep": {"0.1": 0.30, "0.2": 0.45, "0.3": 0.40}, "threshold": 0.15, "miou": 0.41,
           "best_threshold": 0.2, "best_miou": 0.45, "all_background_miou": 0.2, "split": "train", "n_images": 5}
    axis = threshold_sweep(cam, tmp_path / "sweep.png").axes[0]
    curve, configured, best, floor = axis.lines
    np.testing.assert_allclose(curve.get_xydata(), [[0.1, 0.30], [0.2, 0.45], [0.3, 0.40]])
    assert configured.get_xdata()[0] == 0.15 and best.get_xdata()[0] == 0.2 and floor.get_ydata()[0] == 0.2


def test_training_curves_plot_each_log_and_skip_empty_validation(tmp_path):
    log = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.9, 0.6, 0.5], "train_cls": [0.9, 0.5, 0.4],
                        "lr": [0.1, 0.05, 0.0], "val_map": [np.nan, 0.5, 0.7]})
    affinity = pd.DataFrame({"epoch": [1, 2], "train_loss": [0.5, 0.4], "lr": [0.1, 0.0]})
    figure = training_curves([("classifier", log), ("AffinityNet", affinity)], tmp_path / "curves.png")
    losses, lr, validation = figure.axes[:3]
    assert [line.get_label() for line in losses.lines] == ["loss", "cls"]
    np.testing.assert_allclose(validation.lines[0].get_xydata(), [[2, 0.5], [3, 0.7]])  # unvalidated epoch dropped
    assert not figure.axes[5].axison  # AffinityNet never validates: a blank panel


def test_subcategory_grid_has_one_row_per_subcategory(tmp_path):
    clusters = pd.DataFrame({"id": ["a", "b", "c"], "bird_0": [1, 0, 1], "bird_1": [0, 1, 0]})
    thumbnails = {i: np.full((8, 8, 3), value, np.uint8) for i, value in zip("abc", (10, 20, 30))}
    axis = subcategory_grid(clusters, thumbnails, tmp_path / "sub.png", per_row=2, cell=8).axes[0]
    assert [t.get_text() for t in axis.get_yticklabels()] == ["bird_0 (2 images)", "bird_1 (1 images)"]
    mosaic = axis.images[0].get_array()
    step = 8 + 4
    cells = [[int(mosaic[row * step + 4, slot * step + 4, 0]) for slot in range(2)] for row in range(2)]
    assert cells == [[10, 30], [20, 255]]  # row bird_0: a, c; row bird_1: b, then an empty (white) cell


def test_stage_bars_group_methods_by_stage(tmp_path):
    summary = pd.DataFrame({"method": ["baseline", "fmix"], "cam_miou": [0.4, 0.5], "pseudo_label_miou": [0.5, 0.6],
                            "seg_miou": [0.55, 0.65], "seg_miou_crf": [np.nan, np.nan]})
    axis = stage_bars(summary, tmp_path / "stages.png").axes[0]
    np.testing.assert_allclose([bar.get_height() for bar in axis.patches], [0.4, 0.5, 0.5, 0.6, 0.55, 0.65])
    assert [t.get_text() for t in axis.get_legend().texts] == ["CAM", "pseudo-label", "segmentation"]
