"""Tests of the synthetic VOC-layout dataset (wsss_lib.data.synthetic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_lib.data import label_png, synthetic
from wsss_lib.data.label_png import read_label_png
from wsss_lib.data.synthetic import class_names, generate_synthetic, image_rng, render_image

SMALL = dict(n_train=4, n_train_aug=8, n_val=4, image_size=64, n_classes=3, seed=7)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_list(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _render_many(n_images: int, size: int, n_classes: int, seed: int = 0):
    return [render_image(image_rng(seed, "train_aug", i), size, n_classes) for i in range(n_images)]


def test_class_names():
    assert class_names(3) == ["disc", "cross", "triangle"]
    names = class_names(20)
    assert len(names) == 20 and len(set(names)) == 20
    assert class_names(5) == names[:5]
    for bad in (0, 21):
        with pytest.raises(ValueError, match="n_classes"):
            class_names(bad)


def test_deterministic_and_seed_dependent(tmp_path):
    generate_synthetic(tmp_path / "a", **SMALL)
    generate_synthetic(tmp_path / "b", **SMALL)
    generate_synthetic(tmp_path / "c", **{**SMALL, "seed": 8})
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    jpgs = [k for k in a if k.endswith(".jpg")]
    assert all(a[k] != c[k] for k in jpgs)


def test_images_do_not_depend_on_split_sizes(tmp_path):
    generate_synthetic(tmp_path / "a", **SMALL)
    generate_synthetic(tmp_path / "b", **{**SMALL, "n_train_aug": 10, "n_val": 2})
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    for image_id in _read_list(tmp_path / "a", "train_aug"):
        assert a[f"JPEGImages/{image_id}.jpg"] == b[f"JPEGImages/{image_id}.jpg"]
    # val images come from their own stream: same content although their ids are renumbered
    val_a, val_b = _read_list(tmp_path / "a", "val"), _read_list(tmp_path / "b", "val")
    assert a[f"JPEGImages/{val_a[0]}.jpg"] == b[f"JPEGImages/{val_b[0]}.jpg"]
    # ... and differ from the train images of the same index
    assert a[f"JPEGImages/{val_a[0]}.jpg"] != a["JPEGImages/syn_000000.jpg"]


def test_layout(tmp_path):
    root = tmp_path / "voc"
    generate_synthetic(root, **SMALL)
    train, train_aug, val = (_read_list(root, s) for s in ("train", "train_aug", "val"))
    assert (len(train), len(train_aug), len(val)) == (4, 8, 4)
    assert set(train) < set(train_aug)
    assert not set(val) & set(train_aug)
    assert len(set(train_aug + val)) == 12
    assert all(i.startswith("syn_") for i in train_aug + val)
    assert len(list((root / "JPEGImages").iterdir())) == 12
    assert len(list((root / "SegmentationClass").iterdir())) == 12
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no leftover temporaries
    for image_id in train_aug + val:
        with Image.open(root / "JPEGImages" / f"{image_id}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (64, 64)
        with Image.open(root / "SegmentationClass" / f"{image_id}.png") as im:
            assert im.format == "PNG" and im.mode == "P" and im.size == (64, 64)
        labels = read_label_png(root / "SegmentationClass" / f"{image_id}.png")
        assert set(np.unique(labels)) <= set(range(SMALL["n_classes"] + 1))


def test_labels_every_image_has_an_object_and_every_class_occurs(tmp_path):
    root = tmp_path / "voc"
    generate_synthetic(root, n_train=30, n_train_aug=50, n_val=10, image_size=48, n_classes=4, seed=1)
    seen = set()
    for image_id in _read_list(root, "train_aug") + _read_list(root, "val"):
        labels = read_label_png(root / "SegmentationClass" / f"{image_id}.png")
        present = set(np.unique(labels).tolist()) - {0}
        assert present and present <= {1, 2, 3, 4}
        # at least one visible object class covers >= 2 % of the pixels
        assert np.bincount(labels.ravel(), minlength=5)[1:].max() >= 0.02 * labels.size
        seen |= present
    assert seen == {1, 2, 3, 4}


def test_render_image_outputs_and_object_counts():
    counts = []
    for i in range(30):
        image, labels, marks = render_image(image_rng(2, "train_aug", i), 64, 5, min_objects=2, max_objects=2)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert labels.shape == (64, 64) and labels.dtype == np.uint8
        assert marks.shape == (64, 64) and marks.dtype == bool
        assert not (marks & (labels == 0)).any()  # marks lie inside the ground truth
        assert labels.max() <= 5
        counts.append(len(np.unique(labels)) - 1)
    assert max(counts) == 2  # two objects (possibly of one class, or one dropped by occlusion)


def test_mark_is_small_relative_to_object():
    n_classes = 4
    mark_px = np.zeros(n_classes + 1)
    gt_px = np.zeros(n_classes + 1)
    for _, labels, marks in _render_many(60, 64, n_classes):
        mark_px += np.bincount(labels[marks], minlength=n_classes + 1)
        gt_px += np.bincount(labels.ravel(), minlength=n_classes + 1)
    fractions = mark_px[1:] / gt_px[1:]
    assert np.all(fractions > 0.03) and np.all(fractions < 0.20), fractions


def _nearest_mean_accuracy(pixels, classes, n_classes, fit, evaluate):
    means = np.stack([pixels[fit & (classes == c)].mean(0) for c in range(1, n_classes + 1)])
    x = pixels[evaluate]
    pred = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1) + 1
    return float((pred == classes[evaluate]).mean())


def test_mark_is_discriminative_and_body_is_not():
    """Nearest-class-mean colour: marks identify their class, body pixels are near chance (25 %)."""
    n_classes, n_images = 4, 120
    rendered = _render_many(n_images, 64, n_classes, seed=3)
    pixels = np.concatenate([im[lab > 0] for im, lab, _ in rendered]).astype(np.float64)
    classes = np.concatenate([lab[lab > 0] for _, lab, _ in rendered])
    is_mark = np.concatenate([m[lab > 0] for _, lab, m in rendered])
    image_index = np.concatenate([np.full(int((lab > 0).sum()), i) for i, (_, lab, _) in enumerate(rendered)])
    fit = image_index < n_images // 2  # class means from half the images, evaluated on the other half
    mark_acc = _nearest_mean_accuracy(pixels, classes, n_classes, fit & is_mark, ~fit & is_mark)
    body_acc = _nearest_mean_accuracy(pixels, classes, n_classes, fit & ~is_mark, ~fit & ~is_mark)
    # Integer rendering from a seeded numpy generator (no training): seeds 3-6 give marks 1.00 and bodies
    # 0.29-0.40, so both bounds hold with room to spare.
    assert mark_acc > 0.9, mark_acc
    assert body_acc < 0.6, body_acc


def test_background_is_less_saturated_than_bodies():
    rendered = _render_many(40, 64, 4, seed=4)
    def saturation(px):
        px = px.astype(np.float64)
        return ((px.max(1) - px.min(1)) / np.maximum(px.max(1), 1)).mean()
    bg = saturation(np.concatenate([im[lab == 0] for im, lab, _ in rendered]))
    body = saturation(np.concatenate([im[(lab > 0) & ~m] for im, lab, m in rendered]))
    assert body > bg + 0.2, (body, bg)


@pytest.mark.parametrize(
    "overrides, name",
    [
        ({"n_classes": 0}, "n_classes"),
        ({"n_classes": 21}, "n_classes"),
        ({"image_size": 16}, "image_size"),
        ({"n_train": 0}, "n_train"),
        ({"n_train_aug": 3}, "n_train_aug"),
        ({"n_val": 0}, "n_val"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"min_objects": 0}, "min_objects"),
        ({"min_objects": 3, "max_objects": 2}, "max_objects"),
        ({"image_size": True}, "image_size"),
    ],
)
def test_invalid_arguments(tmp_path, overrides, name):
    with pytest.raises(ValueError, match=name):
        generate_synthetic(tmp_path / "voc", **{**SMALL, **overrides})
    assert not (tmp_path / "voc").exists()


def test_failure_leaves_no_root(tmp_path, monkeypatch):
    calls = []

    def failing_write(path, labels):
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return label_png.write_label_png(path, labels)

    monkeypatch.setattr(synthetic, "write_label_png", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_synthetic(tmp_path / "voc", **SMALL)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []
