"""Tests for reading SBD .mat labels and building SegmentationClassAug / train_aug."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from wsss_lib.data.label_png import IGNORE_INDEX, read_label_png, write_label_png
from wsss_lib.data.sbd import build_segmentation_class_aug, read_id_list, read_sbd_mat, train_aug_ids


def segmentation(seed: int, shape: tuple[int, int] = (5, 7)) -> np.ndarray:
    arr = np.random.default_rng(seed).integers(0, 21, size=shape).astype(np.uint8)
    arr[0, 0] = IGNORE_INDEX
    return arr


def boundaries(shape: tuple[int, int]) -> np.ndarray:
    """Like the release: a 20x1 cell of sparse logical boundary maps."""
    cell = np.empty((20, 1), dtype=object)
    for i in range(20):
        cell[i, 0] = scipy.sparse.csc_matrix(np.zeros(shape, dtype=bool))
    return cell


def write_gtcls_dict(path: Path, seg: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(
        path,
        {
            "GTcls": {
                "Segmentation": seg,
                "Boundaries": boundaries(seg.shape),
                "CategoriesPresent": np.unique(seg[seg < 21]).astype(np.uint8),
            }
        },
    )


def write_gtcls_record(path: Path, seg: np.ndarray) -> None:
    """The struct written from a 1x1 numpy record array instead of a dict."""
    record = np.zeros((1, 1), dtype=[("Boundaries", object), ("Segmentation", object), ("CategoriesPresent", object)])
    record[0, 0]["Boundaries"] = boundaries(seg.shape)
    record[0, 0]["Segmentation"] = seg
    record[0, 0]["CategoriesPresent"] = np.array([1, 15], dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"GTcls": record}, do_compression=True)


@pytest.mark.parametrize("writer", [write_gtcls_dict, write_gtcls_record])
@pytest.mark.parametrize("shape", [(5, 7), (1, 6)])
def test_read_sbd_mat_exact(tmp_path: Path, writer, shape: tuple[int, int]) -> None:
    seg = segmentation(0, shape)
    path = tmp_path / "cls" / "2008_000001.mat"
    writer(path, seg)
    out = read_sbd_mat(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, seg)


def test_read_sbd_mat_float_values(tmp_path: Path) -> None:
    seg = segmentation(1)
    path = tmp_path / "f.mat"
    write_gtcls_dict(path, seg.astype(np.float64))
    np.testing.assert_array_equal(read_sbd_mat(path), seg)


def test_read_sbd_mat_without_gtcls(tmp_path: Path) -> None:
    path = tmp_path / "inst.mat"
    scipy.io.savemat(path, {"GTinst": {"Segmentation": segmentation(2)}})
    with pytest.raises(ValueError, match="GTcls") as excinfo:
        read_sbd_mat(path)
    assert str(path) in str(excinfo.value)


def test_read_sbd_mat_without_segmentation(tmp_path: Path) -> None:
    path = tmp_path / "noseg.mat"
    scipy.io.savemat(path, {"GTcls": {"CategoriesPresent": np.array([1], dtype=np.uint8)}})
    with pytest.raises(ValueError, match="Segmentation") as excinfo:
        read_sbd_mat(path)
    assert str(path) in str(excinfo.value)


def test_read_sbd_mat_out_of_range(tmp_path: Path) -> None:
    seg = segmentation(3)
    seg[1, 1] = 21
    path = tmp_path / "bad.mat"
    write_gtcls_dict(path, seg)
    with pytest.raises(ValueError, match=r"outside 0-20.*\[21\]") as excinfo:
        read_sbd_mat(path)
    assert str(path) in str(excinfo.value)


def test_read_sbd_mat_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.mat"
    path.write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match="corrupt.mat"):
        read_sbd_mat(path)


def test_read_sbd_mat_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.mat"):
        read_sbd_mat(tmp_path / "absent.mat")


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    voc_root = tmp_path / "VOCdevkit" / "VOC2012"
    sbd_root = tmp_path / "benchmark_RELEASE" / "dataset"
    arrays = {
        "voc_a": segmentation(10),  # VOC PNG and a different SBD .mat: VOC must win
        "sbd_b": segmentation(11),  # SBD only
    }
    write_label_png(voc_root / "SegmentationClass" / "a.png", arrays["voc_a"])
    write_gtcls_dict(sbd_root / "cls" / "a.mat", segmentation(12))
    write_gtcls_dict(sbd_root / "cls" / "b.mat", arrays["sbd_b"])
    return voc_root, sbd_root, arrays


def test_build_prefers_voc_then_sbd(tmp_path: Path, roots) -> None:
    voc_root, sbd_root, arrays = roots
    out_dir = tmp_path / "aug" / "SegmentationClassAug"
    build_segmentation_class_aug(voc_root, sbd_root, out_dir, iter(["a", "b", "a"]))
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.png", "b.png"]
    np.testing.assert_array_equal(read_label_png(out_dir / "a.png"), arrays["voc_a"])
    np.testing.assert_array_equal(read_label_png(out_dir / "b.png"), arrays["sbd_b"])
    assert sorted(p.name for p in out_dir.parent.iterdir()) == ["SegmentationClassAug"]


def test_build_missing_id_leaves_nothing(tmp_path: Path, roots) -> None:
    voc_root, sbd_root, _ = roots
    out_dir = tmp_path / "aug" / "SegmentationClassAug"
    with pytest.raises(FileNotFoundError) as excinfo:
        build_segmentation_class_aug(voc_root, sbd_root, out_dir, ["a", "missing_c", "b"])
    message = str(excinfo.value)
    assert "'missing_c'" in message
    assert str(voc_root / "SegmentationClass" / "missing_c.png") in message
    assert str(sbd_root / "cls" / "missing_c.mat") in message
    assert not out_dir.exists()
    assert not out_dir.parent.exists() or list(out_dir.parent.iterdir()) == []


def test_build_bad_mat_leaves_nothing(tmp_path: Path, roots) -> None:
    voc_root, sbd_root, _ = roots
    scipy.io.savemat(sbd_root / "cls" / "c.mat", {"other": np.zeros(3)})
    out_dir = tmp_path / "aug" / "SegmentationClassAug"
    with pytest.raises(ValueError, match="c.mat"):
        build_segmentation_class_aug(voc_root, sbd_root, out_dir, ["a", "b", "c"])
    assert list(out_dir.parent.iterdir()) == []


def test_build_rejects_path_like_id(tmp_path: Path, roots) -> None:
    voc_root, sbd_root, _ = roots
    with pytest.raises(ValueError, match="invalid image id"):
        build_segmentation_class_aug(voc_root, sbd_root, tmp_path / "aug", ["../a"])


def test_train_aug_ids() -> None:
    voc_train = ["v1", "v2", "s1"]
    voc_val = ["v3", "s2", "s4"]
    sbd_train = ["s1", "s2", "s3"]
    sbd_val = ["s4", "s5", "v2"]
    # union = v1 v2 s1 s2 s3 s4 s5; minus VOC val (v3 s2 s4)
    assert train_aug_ids(voc_train, voc_val, sbd_train, sbd_val) == ["s1", "s3", "s5", "v1", "v2"]
    from_iterators = train_aug_ids(iter(voc_train), iter(voc_val), iter(sbd_train), iter(sbd_val))
    assert from_iterators == ["s1", "s3", "s5", "v1", "v2"]


def test_read_id_list(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("2008_000002\n\n  2008_000003 \r\n2008_000007\n\n")
    assert read_id_list(path) == ["2008_000002", "2008_000003", "2008_000007"]


def test_read_id_list_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_id_list(tmp_path / "nope.txt")
    per_class = tmp_path / "aeroplane_train.txt"
    per_class.write_text("2008_000002 -1\n")
    with pytest.raises(ValueError, match="aeroplane_train.txt:1"):
        read_id_list(per_class)
