"""Dense-CRF pseudo-labels (wsss_lib.crf): formulas, pydensecrf behaviour, PSA's labelling rule, pool."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss_lib import crf
from wsss_lib.crf import (IGNORE, CRFParams, CRFTask, confident_labels, confident_labels_many, dense_crf,
                          scores_with_background)

PSA = CRFParams()
LOW, HIGH = 4.0, 32.0


def blob(height: int, width: int, cy: float, cx: float, sigma: float) -> np.ndarray:
    """A Gaussian bump peaking at 1 at (cy, cx)."""
    yy, xx = np.mgrid[:height, :width]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def square_scene() -> tuple[np.ndarray, np.ndarray, tuple[slice, slice]]:
    """A bright 16x16 square on a dark 40x48 background, and a CAM that is a blob on the square."""
    image = np.full((40, 48, 3), 30, dtype=np.uint8)
    square = (slice(12, 28), slice(16, 32))
    image[square] = (230, 220, 90)
    cams = blob(40, 48, 19.5, 23.5, 7.0)[None].astype(np.float32)
    return image, cams, square


# --- scores_with_background ---------------------------------------------------------------------

def test_scores_with_background_matches_formula():
    cams = np.array([[[0.0, 0.5, 1.0]],
                     [[0.2, 0.25, 0.0]]], dtype=np.float32)  # (k=2, H=1, W=3)
    scores = scores_with_background(cams, 2.0)
    # max over classes = [0.2, 0.5, 1.0] -> (1 - max)^2 = [0.64, 0.25, 0.0]
    expected = np.array([[[0.64, 0.25, 0.0]], [[0.0, 0.5, 1.0]], [[0.2, 0.25, 0.0]]], dtype=np.float32)
    assert scores.shape == (3, 1, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_scores_with_background_accepts_float16_and_no_classes():
    cams = np.full((1, 2, 2), 0.5, dtype=np.float16)
    np.testing.assert_allclose(scores_with_background(cams, 3.0)[0], np.full((2, 2), 0.125), atol=1e-6)
    empty = scores_with_background(np.zeros((0, 2, 3), dtype=np.float32), 4.0)
    assert empty.shape == (1, 2, 3)
    assert (empty == 1).all()


@pytest.mark.parametrize("bad", [np.full((1, 2, 2), 1.5), np.full((1, 2, 2), -0.1), np.full((1, 2, 2), np.nan),
                                 np.zeros((2, 2))])
def test_scores_with_background_rejects_bad_cams(bad):
    with pytest.raises(ValueError):
        scores_with_background(bad, 4.0)


# --- dense_crf ------------------------------------------------------------------------------------

def test_dense_crf_zero_iterations_returns_normalised_scores():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    scores = rng.uniform(0.05, 1.0, (3, 24, 32)).astype(np.float32)
    q = dense_crf(image, scores, CRFParams(iterations=0))
    assert q.shape == (3, 24, 32) and q.dtype == np.float32
    np.testing.assert_allclose(q, scores / scores.sum(0), atol=1e-5)


def test_dense_crf_single_class_gives_ones():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    q = dense_crf(image, rng.uniform(0, 1, (1, 24, 32)), PSA)
    assert q.shape == (1, 24, 32)
    assert (q == 1).all()


def test_dense_crf_accepts_read_only_and_strided_images():
    rng = np.random.default_rng(2)
    big = rng.integers(0, 256, (24, 64, 3), dtype=np.uint8)
    view = big[:, ::2]  # not C-contiguous
    frozen = np.ascontiguousarray(view)
    frozen.flags.writeable = False  # as np.asarray(PIL image) is
    scores = rng.uniform(0.05, 1.0, (2, 24, 32)).astype(np.float32)
    np.testing.assert_array_equal(dense_crf(view, scores, PSA), dense_crf(frozen, scores, PSA))


@pytest.mark.parametrize("image, scores", [
    (np.zeros((24, 32, 3), np.float32), np.ones((2, 24, 32))),  # image not uint8
    (np.zeros((24, 32), np.uint8), np.ones((2, 24, 32))),  # image not HxWx3
    (np.zeros((24, 32, 3), np.uint8), np.ones((2, 24, 31))),  # size mismatch
    (np.zeros((24, 32, 3), np.uint8), np.ones((0, 24, 32))),  # no classes
    (np.zeros((24, 32, 3), np.uint8), np.ones((24, 32))),  # scores not 3-D
])
def test_dense_crf_rejects_bad_shapes(image, scores):
    with pytest.raises(ValueError, match=re.escape(str(image.shape)) + ".*" + re.escape(str(scores.shape))):
        dense_crf(image, scores, PSA)


def test_dense_crf_smooths_label_noise_within_flat_regions():
    height, width = 24, 32
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = (200, 40, 40)
    image[:, width // 2:] = (40, 60, 200)
    clean = np.zeros((height, width), dtype=np.int64)
    clean[:, width // 2:] = 1
    flipped = np.random.default_rng(0).random((height, width)) < 0.1
    noisy = np.where(flipped, 1 - clean, clean)
    scores = np.stack([np.where(noisy == 0, 0.7, 0.3), np.where(noisy == 1, 0.7, 0.3)]).astype(np.float32)
    assert flipped.sum() > 40  # the input really is noisy
    np.testing.assert_array_equal(dense_crf(image, scores, PSA).argmax(0), clean)


# --- confident_labels -----------------------------------------------------------------------------

def test_confident_labels_on_a_square_object():
    image, cams, square = square_scene()
    labels = confident_labels(image, cams, np.array([3]), LOW, HIGH, PSA)
    assert labels.dtype == np.uint8 and labels.shape == (40, 48)
    inside = np.zeros(labels.shape, dtype=bool)
    inside[square] = True
    # The CRF snaps the object to the square's colour edges; a band around it stays unsure.
    assert (labels[inside] == 4).all()
    assert (labels[~inside] != 4).all()
    assert (labels[[0, 0, -1, -1], [0, -1, 0, -1]] == 0).all()
    assert (labels == IGNORE).any()
    assert set(np.unique(labels)) <= {0, 4, IGNORE}

    low = dense_crf(image, scores_with_background(cams, LOW), PSA).argmax(0)
    high = dense_crf(image, scores_with_background(cams, HIGH), PSA).argmax(0)
    assert (low[labels == 4] == 1).all()
    expected = np.where(high == 0, 0, np.where(low == 1, 4, IGNORE))
    np.testing.assert_array_equal(labels, expected)


def test_confident_labels_maps_channels_to_keys():
    image = np.full((24, 32, 3), 20, dtype=np.uint8)
    image[4:14, 3:13] = (220, 60, 60)
    image[10:20, 18:29] = (60, 200, 90)
    cams = np.stack([blob(24, 32, 8.5, 7.5, 4.0), blob(24, 32, 14.5, 23.0, 4.0)]).astype(np.float32)
    keys = np.array([0, 7])
    labels = confident_labels(image, cams, keys, LOW, HIGH, PSA)
    low = dense_crf(image, scores_with_background(cams, LOW), PSA).argmax(0)
    high = dense_crf(image, scores_with_background(cams, HIGH), PSA).argmax(0)
    expected = np.where(high == 0, 0, np.where(low == 0, IGNORE, keys[np.maximum(low - 1, 0)] + 1))
    np.testing.assert_array_equal(labels, expected)
    assert {1, 8} <= set(np.unique(labels))


def test_confident_labels_rule_with_given_crf_outputs(monkeypatch):
    """PSA's rule on hand-made argmaxes: low-alpha foreground -> key+1, high-alpha background -> 0 (wins)."""
    low = np.array([[0, 1, 2, 1, 0]])
    high = np.array([[0, 0, 1, 2, 1]])
    cams = np.full((2, 1, 5), 0.5, dtype=np.float32)
    low_scores = scores_with_background(cams, LOW)

    def fake_crf(image, scores, params):
        argmax = low if np.array_equal(scores, low_scores) else high
        return np.eye(3, dtype=np.float32)[argmax].transpose(2, 0, 1)

    monkeypatch.setattr(crf, "dense_crf", fake_crf)
    labels = confident_labels(np.zeros((1, 5, 3), np.uint8), cams, np.array([5, 9]), LOW, HIGH, PSA)
    np.testing.assert_array_equal(labels, [[0, 0, 10, 6, IGNORE]])


def test_confident_labels_without_classes_is_all_background():
    labels = confident_labels(np.zeros((24, 32, 3), np.uint8), np.zeros((0, 24, 32), np.float32),
                              np.zeros(0, dtype=np.int64), LOW, HIGH, PSA)
    assert labels.dtype == np.uint8 and (labels == 0).all()


@pytest.mark.parametrize("keys", [np.array([1, 2]), np.array([254]), np.array([0.5])])
def test_confident_labels_rejects_bad_keys(keys):
    cams = np.full((1, 24, 32), 0.5, dtype=np.float32)
    with pytest.raises(ValueError, match="keys"):
        confident_labels(np.zeros((24, 32, 3), np.uint8), cams, keys, LOW, HIGH, PSA)


# --- confident_labels_many ------------------------------------------------------------------------

def make_tasks(directory: Path, n: int = 6) -> list[CRFTask]:
    """Small PNG scenes with 0-2 objects each; CAMs are float16 blobs on the objects."""
    rng = np.random.default_rng(7)
    tasks = []
    for i in range(n):
        image = rng.integers(0, 60, (24, 32, 3), dtype=np.uint8)
        n_objects = i % 3
        keys = np.sort(rng.choice(20, n_objects, replace=False)).astype(np.int16)
        maps = []
        for _ in range(n_objects):
            cy, cx = rng.integers(6, 18), rng.integers(6, 26)
            image[cy - 5:cy + 5, cx - 5:cx + 5] = rng.integers(120, 256, 3)
            maps.append(blob(24, 32, cy, cx, 3.5))
        cams = np.asarray(maps, dtype=np.float16).reshape(n_objects, 24, 32)
        path = directory / f"img{i}.png"
        Image.fromarray(image).save(path)
        tasks.append(CRFTask(f"img{i}", str(path), cams, keys))
    return tasks


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_confident_labels_many_parallel_equals_serial(tmp_path, start_method):
    tasks = make_tasks(tmp_path)
    serial = list(confident_labels_many(tasks, LOW, HIGH, PSA, processes=1))
    parallel = list(confident_labels_many(iter(tasks), LOW, HIGH, PSA, processes=2, start_method=start_method))
    assert [image_id for image_id, _ in serial] == [task.image_id for task in tasks]
    assert [image_id for image_id, _ in parallel] == [task.image_id for task in tasks]
    for (_, a), (_, b), task in zip(serial, parallel, tasks):
        np.testing.assert_array_equal(a, b)
        image = np.asarray(Image.open(task.image_path).convert("RGB"))
        direct = confident_labels(image, task.cams.astype(np.float32), task.keys, LOW, HIGH, PSA)
        np.testing.assert_array_equal(a, direct)
    assert any((labels > 0).any() and (labels != IGNORE).any() for _, labels in serial)


@pytest.mark.parametrize("processes", [1, 2])
def test_confident_labels_many_names_missing_image(tmp_path, processes):
    tasks = make_tasks(tmp_path, 2)
    missing = str(tmp_path / "nowhere.png")
    tasks.append(tasks[1]._replace(image_id="gone", image_path=missing))
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        list(confident_labels_many(tasks, LOW, HIGH, PSA, processes=processes))


def test_confident_labels_many_names_corrupt_image(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png at all")
    task = CRFTask("bad", str(corrupt), np.zeros((0, 24, 32), np.float16), np.zeros(0, np.int16))
    with pytest.raises(ValueError, match=re.escape(f"cannot read image {corrupt}")):
        list(confident_labels_many([task], LOW, HIGH, PSA, processes=1))


@pytest.mark.parametrize("processes", [1, 2])
def test_confident_labels_many_names_size_mismatch(tmp_path, processes):
    tasks = make_tasks(tmp_path, 2)
    tasks[1] = tasks[1]._replace(image_id="img1-cropped", cams=np.zeros((1, 20, 32), np.float16),
                                 keys=np.array([4]))
    with pytest.raises(ValueError, match=r"img1-cropped.*\(1, 20, 32\).*\(24, 32, 3\)"):
        list(confident_labels_many(tasks, LOW, HIGH, PSA, processes=processes))


def test_confident_labels_many_can_stop_early(tmp_path):
    results = confident_labels_many(make_tasks(tmp_path), LOW, HIGH, PSA, processes=2)
    assert next(results)[0] == "img0"
    results.close()  # leaves the pool's with-block, cancelling what has not started


STOP_EARLY_REPEATEDLY = """
import math, sys
from wsss_lib.crf import pool_imap
for _ in range(1000):
    results = pool_imap(math.factorial, [4000, 8000, 12000, 4000, 8000, 12000], processes=2)
    assert next(results) == math.factorial(4000)
    results.close()
print("done")
"""


def test_pool_stopped_early_again_and_again_never_hangs():
    """Regression: with ``multiprocessing.Pool.imap``, leaving early ran ``Pool.terminate()``, which
    deadlocks now and then (CPython #78178). With that code this loop hung in 4 of 4 tries on a 2-core
    machine; with the executor it finishes in about 12 s. It runs in a child process so that a hang
    fails the test (at the timeout) instead of stalling the suite."""
    import subprocess
    import sys
    finished = subprocess.run([sys.executable, "-c", STOP_EARLY_REPEATEDLY], capture_output=True, text=True,
                              timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "done"


# --- CRFParams ------------------------------------------------------------------------------------

def test_params_from_config_round_trip():
    opts = {"iterations": 5, "gaussian_sxy": 3, "gaussian_compat": 3.0, "bilateral_sxy": 50.0,
            "bilateral_srgb": 10.0, "bilateral_compat": 4.0}
    params = CRFParams.from_config(opts)
    assert params == CRFParams(5, 3.0, 3.0, 50.0, 10.0, 4.0)
    assert isinstance(params.gaussian_sxy, float)


def test_params_from_config_rejects_unknown_and_missing_keys():
    opts = {field: getattr(PSA, field) for field in PSA.__dataclass_fields__}
    with pytest.raises(ValueError, match="bilateral_rgb"):
        CRFParams.from_config({**opts, "bilateral_rgb": 13.0})
    del opts["iterations"]
    with pytest.raises(ValueError, match="iterations"):
        CRFParams.from_config(opts)


@pytest.mark.parametrize("key, value", [("iterations", 2.5), ("iterations", True), ("iterations", -1),
                                        ("bilateral_srgb", "13"), ("gaussian_sxy", float("nan"))])
def test_params_from_config_rejects_bad_values(key, value):
    opts = {field: getattr(PSA, field) for field in PSA.__dataclass_fields__}
    with pytest.raises(ValueError, match=key):
        CRFParams.from_config({**opts, key: value})
