"""Scoring label PNG folders against a split's masks, and reading several split tables as one."""


import numpy as np
import pandas as pd
import pytest

from wsss_lib.data.label_png import write_label_png
from wsss_lib.data.voc import read_split_tables
from wsss_lib.evaluation import score_label_dir

CLASSES = ["cat", "dog"]


def write_split(tmp_path, name, masks: dict[str, np.ndarray | None]):
    rows = []
    for image_id, mask in masks.items():
        mask_path = ""
        if mask is not None:
            mask_path = str(tmp_path / "masks" / f"{image_id}.png")
            write_label_png(mask_path, mask)
        rows.append({"id": image_id, "image": f"{image_id}.jpg", "mask": mask_path, "cat": 1, "dog": 0})
    path = tmp_path / f"{name}.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def masks():
    a = np.zeros((4, 6), np.uint8)
    a[1:3, 1:4] = 1
    a[0, 0] = 255
    b = np.full((4, 6), 2, np.uint8)
    b[:, :2] = 0
    return {"a": a, "b": b, "c": None}  # c has no mask: skipped


def test_prediction_equal_to_ground_truth_scores_one(tmp_path):
    split = write_split(tmp_path, "val", masks())
    for image_id, mask in masks().items():
        if mask is not None:
            write_label_png(tmp_path / "pred" / f"{image_id}.png", np.where(mask == 255, 0, mask).astype(np.uint8))
    result = score_label_dir(tmp_path / "pred", split)
    assert result["miou"] == 1.0 and result["n_images"] == 2 and result["split"] == "val"
    assert result["per_class_iou"] == {"background": 1.0, "cat": 1.0, "dog": 1.0}


def test_known_answer_against_a_direct_count(tmp_path):
    split = write_split(tmp_path, "val", masks())
    pred_a = np.zeros((4, 6), np.uint8)  # misses the cat entirely
    pred_b = np.full((4, 6), 2, np.uint8)  # dog everywhere: 8 background pixels become dog
    write_label_png(tmp_path / "pred" / "a.png", pred_a)
    write_label_png(tmp_path / "pred" / "b.png", pred_b)
    result = score_label_dir(tmp_path / "pred", split)
    # background: gt 17 (a, ignoring one) + 8 (b) = 25; predicted bg 23 (a) + 0 (b); TP 17
    bg = 17 / (25 + 23 - 17)
    cat = 0.0
    dog = 16 / (16 + 24 - 16)
    assert result["per_class_iou"]["background"] == pytest.approx(bg)
    assert result["miou"] == pytest.approx((bg + cat + dog) / 3)


def test_missing_prediction_and_size_mismatch_name_the_file(tmp_path):
    split = write_split(tmp_path, "val", masks())
    write_label_png(tmp_path / "pred" / "a.png", np.zeros((4, 6), np.uint8))
    with pytest.raises(FileNotFoundError, match="b.png"):
        score_label_dir(tmp_path / "pred", split)
    write_label_png(tmp_path / "pred" / "b.png", np.zeros((5, 6), np.uint8))
    with pytest.raises(ValueError, match="b.png"):
        score_label_dir(tmp_path / "pred", split)


def test_read_split_tables_unions_without_duplicates(tmp_path):
    train = write_split(tmp_path, "train", {"a": None, "b": None})
    train_aug = write_split(tmp_path, "train_aug", {"b": None, "c": None, "a": None, "d": None})
    table = read_split_tables([train, train_aug], CLASSES)
    assert table["id"].tolist() == ["a", "b", "c", "d"]
    assert read_split_tables(str(train))["id"].tolist() == ["a", "b"]
    other = tmp_path / "other.csv"
    pd.DataFrame([{"id": "x", "image": "x.jpg", "mask": "", "cow": 1}]).to_csv(other, index=False)
    with pytest.raises(ValueError, match="other.csv"):
        read_split_tables([train, other])
