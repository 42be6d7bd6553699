"""Training datasets: decoded images kept in memory within a budget, items unchanged by it."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from wsss_lib.data import datasets
from wsss_lib.data.datasets import ClassificationDataset
from wsss_lib.data.transforms import ClassificationTrainTransform

MEAN, STD = (120.0,) * 3, (60.0,) * 3


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
        rows.append({"id": str(i), "image": str(path), "mask": "", "a": i % 2, "b": 1 - i % 2})
    return pd.DataFrame(rows)


def test_decoded_images_are_read_once_within_the_budget_and_items_do_not_change(table, monkeypatch):
    transform = ClassificationTrainTransform(16, (18, 26), True, (0.3, 0.3, 0.3, 0.1), MEAN, STD)
    reads = []
    read_image = datasets.read_image
    monkeypatch.setattr(datasets, "read_image", lambda path: reads.append(path) or read_image(path))
    one_image = 20 * 24 * 3
    cached = ClassificationDataset(table, transform, seed=5, cache_bytes=2 * one_image)  # room for two images
    uncached = ClassificationDataset(table, transform, seed=5, cache_bytes=0)
    for epoch in range(3):
        cached.epoch = uncached.epoch = epoch
        for index in range(4):
            (image, label), (expected, expected_label) = cached[index], uncached[index]
            torch.testing.assert_close(image, expected, rtol=0, atol=0)
            torch.testing.assert_close(label, expected_label)
    # uncached: 4 images x 3 epochs; cached: the first two once, the other two every epoch
    assert len(reads) == 12 + 2 + 2 * 3
    assert sorted(cached._decoded) == [0, 1]
    with pytest.raises(ValueError, match="read-only"):
        cached.decoded_image(0)[0, 0, 0] = 1
