import numpy as np
import pytest

from wsss_lib.metrics import confusion_matrix, iou_from_confusion, summarise


def direct_iou(gt, pred, n_classes):
    """Per-class IoU by counting pixel sets directly (independent of the confusion matrix)."""
    valid = gt != 255
    out = []
    for c in range(n_classes):
        inter = np.sum((gt == c) & (pred == c) & valid)
        union = np.sum(((gt == c) | (pred == c)) & valid)
        out.append(inter / union if union else np.nan)
    return np.array(out)


def test_miou_matches_direct_per_class_count():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 5, size=(40, 30))
    gt[rng.random(gt.shape) < 0.1] = 255
    pred = np.where(rng.random(gt.shape) < 0.6, np.where(gt == 255, 0, gt), rng.integers(0, 5, gt.shape))
    conf = confusion_matrix(gt, pred, 5)
    np.testing.assert_allclose(iou_from_confusion(conf), direct_iou(gt, pred, 5))
    assert conf.sum() == np.sum(gt != 255)
    result = summarise(conf, ["bg", "a", "b", "c", "d"])
    assert result["miou"] == pytest.approx(np.nanmean(direct_iou(gt, pred, 5)))


def test_known_answer_and_absent_classes():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 2]])
    # class 0: tp 3, fp 1 (gt 1 -> 0), fn 1 -> 3/5; class 1: tp 2, fp 1, fn 1 -> 2/4; class 2, 3: absent
    result = summarise(confusion_matrix(gt, pred, 4), ["bg", "a", "b", "c"])
    assert result["per_class_iou"] == {"bg": 0.6, "a": 0.5, "b": None, "c": None}
    assert result["miou"] == pytest.approx(0.55)
    assert result["classes_present"] == ["bg", "a"]


def test_perfect_prediction_scores_one():
    gt = np.array([[0, 1], [2, 255]])
    assert summarise(confusion_matrix(gt, np.where(gt == 255, 0, gt), 3), ["bg", "a", "b"])["miou"] == 1.0


def test_shape_mismatch_and_bad_prediction_are_errors():
    with pytest.raises(ValueError, match="pixels"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((3, 2)), 2)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 7), 2)
