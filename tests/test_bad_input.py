"""Bad input, end to end: the real workflow on each kind of bad input fails with an error naming the file, key or
value, and leaves no partial output (the failing job's outputs absent, no temporary or lock files beside them)."""

import io
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import RunsCodeWhenUnpickled, png_claiming, run_snakemake
from overlays import TINY
from wsss_lib.data.label_png import write_label_png

VOC_IDS = ["2007_000001", "2007_000002", "2007_000003"]


def failure_text(workdir: Path, result, log: str) -> str:
    """Snakemake's own output and the failing job's log (its script sends its traceback there)."""
    log_path = workdir / "results" / "logs" / log
    return result.stdout + result.stderr + (log_path.read_text() if log_path.is_file() else "")


def assert_no_partial_output(*outputs: Path) -> None:
    for output in outputs:
        assert not output.exists(), f"partial output left: {output}"
        # atomic_path's temporary (.<name>.*.tmp) and writer lock (.<name>.lock)
        leftovers = list(output.parent.glob(f".{output.name}.*")) if output.parent.is_dir() else []
        assert not leftovers, leftovers


@pytest.fixture(scope="module")
def cam_run(tmp_path_factory) -> Path:
    """Synthetic data, split tables, a trained CAM net and its CAM store: what the bad artifacts replace."""
    workdir = tmp_path_factory.mktemp("upstream")
    run_snakemake(workdir, "--cores", "2", "results/baseline/cam/cams.h5", overlay=TINY)
    return workdir


@pytest.fixture
def cam_copy(cam_run, tmp_path) -> Path:
    workdir = tmp_path / "work"
    shutil.copytree(cam_run, workdir, symlinks=True)  # copy2: modification times kept, so nothing is stale
    return workdir


def voc_tree(root: Path, split_lines=VOC_IDS) -> Path:
    """A three-image VOC-layout tree (10x8 images, one object each) with a train list."""
    voc = root / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    for i, image_id in enumerate(VOC_IDS):
        Image.new("RGB", (10, 8), (40 * i, 90, 20)).save(voc / "JPEGImages" / f"{image_id}.jpg", format="JPEG")
        mask = np.zeros((8, 10), np.uint8)
        mask[2:6, 3:7] = i + 1
        write_label_png(voc / "SegmentationClass" / f"{image_id}.png", mask)
    (voc / "ImageSets/Segmentation/train.txt").write_text("".join(f"{i}\n" for i in split_lines))
    return voc


def run_split(workdir: Path, voc: Path):
    overlay = {"dataset": "voc12", "device": "cpu", "voc12": {"root": str(voc)}}
    return run_snakemake(workdir, "--cores", "1", "results/splits/train.csv", overlay=overlay, check=False)


def failed_split(workdir: Path, voc: Path) -> str:
    """The split job on ``voc`` fails and leaves no split table: what snakemake and the job's log say."""
    result = run_split(workdir, voc)
    assert result.returncode != 0
    assert_no_partial_output(workdir / "results/splits/train.csv")
    return failure_text(workdir, result, "prepare_splits/train.log")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_jpeg_in_the_dataset(tmp_path, damage):
    voc = voc_tree(tmp_path / "voc")
    image = voc / "JPEGImages" / f"{VOC_IDS[1]}.jpg"
    # large enough that half the file is past its headers: the cut falls in the compressed data
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8))
    write_label_png(voc / "SegmentationClass" / f"{VOC_IDS[1]}.png", np.full((80, 100), 2, np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, format="JPEG")
    image.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2] if damage == "truncated"
                      else b"this is no image at all\n" * 20)
    text = failed_split(tmp_path, voc)
    assert f"cannot read image {image}" in text and (damage != "truncated" or "is truncated" in text), text


@pytest.mark.slow
def test_mask_of_another_size_than_its_image(tmp_path):
    voc = voc_tree(tmp_path / "voc")
    mask = voc / "SegmentationClass" / f"{VOC_IDS[2]}.png"
    write_label_png(mask, np.zeros((9, 10), np.uint8))
    text = failed_split(tmp_path, voc)
    assert f"mask {mask} is 9x10" in text and f"{VOC_IDS[2]}.jpg is 8x10" in text, text


@pytest.mark.slow
def test_image_listed_twice_in_a_split(tmp_path):
    voc = voc_tree(tmp_path / "voc", split_lines=[*VOC_IDS, VOC_IDS[0]])
    text = failed_split(tmp_path, voc)
    assert str(voc / "ImageSets/Segmentation/train.txt") in text and f"more than once: ['{VOC_IDS[0]}']" in text, text


def files_outside(root: Path, *inside: Path) -> set[Path]:
    """The files under ``root`` but not under any of ``inside``, the workflow's overlay config aside."""
    return {p for p in root.rglob("*")
            if p.is_file() and p.name != "overlay.yaml" and not any(p.is_relative_to(d) for d in inside)}


@pytest.mark.slow
@pytest.mark.parametrize("bad_id", ["../../escape_probe", "sub/2007_000001"])
def test_image_id_that_is_a_path(tmp_path, bad_id):
    # the files the id points at exist, image and mask, so only the id check stops the old reading of them
    voc = voc_tree(tmp_path / "voc", split_lines=[*VOC_IDS, bad_id])
    for folder, suffix in (("JPEGImages", ".jpg"), ("SegmentationClass", ".png")):
        (voc / folder / f"{bad_id}{suffix}").parent.mkdir(exist_ok=True)
        shutil.copy(voc / folder / f"{VOC_IDS[0]}{suffix}", voc / folder / f"{bad_id}{suffix}")
    assert (tmp_path / "voc" / "escape_probe.jpg").is_file() or bad_id.startswith("sub/")
    before = files_outside(tmp_path)
    text = failed_split(tmp_path, voc)
    assert f"split list {voc / 'ImageSets/Segmentation/train.txt'}, line 4: invalid image id {bad_id!r}: it holds a " \
           f"path separator" in text, text
    assert files_outside(tmp_path, tmp_path / "results", tmp_path / ".snakemake") == before


@pytest.mark.slow
def test_png_claiming_20000_by_20000_pixels_named_jpg(tmp_path):
    voc = voc_tree(tmp_path / "voc")
    image = voc / "JPEGImages" / f"{VOC_IDS[1]}.jpg"
    png_claiming(image, 20000, 20000)
    text = failed_split(tmp_path, voc)
    assert f"image {image} claims 20000x20000 (WxH) = 400,000,000 pixels, over the decompression-bomb limit of " \
           f"{Image.MAX_IMAGE_PIXELS:,} pixels" in text, text


@pytest.mark.slow
def test_photo_turned_by_its_exif_orientation_with_a_mask_of_the_displayed_photo(tmp_path):
    # stored 8 high and 10 wide, displayed (Orientation 6: a quarter turn clockwise) 10 high and 8 wide
    voc = voc_tree(tmp_path / "voc")
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.full((8, 10, 3), 30, np.uint8)
    stored[:4, :5] = 230
    Image.fromarray(stored).save(voc / "JPEGImages" / f"{VOC_IDS[1]}.jpg", format="JPEG", exif=exif)
    write_label_png(voc / "SegmentationClass" / f"{VOC_IDS[1]}.png", np.rot90(stored[..., 0] > 128, k=-1) * 2)
    assert run_split(tmp_path, voc).returncode == 0
    table = pd.read_csv(tmp_path / "results/splits/train.csv", dtype={"id": str})
    assert table["id"].tolist() == VOC_IDS and table["bicycle"].tolist() == [0, 1, 0]
    write_label_png(voc / "SegmentationClass" / f"{VOC_IDS[1]}.png", (stored[..., 0] > 128) * 2)  # as stored
    workdir = tmp_path / "second"  # the split table above is up to date in the first: Snakemake would not rerun
    workdir.mkdir()
    text = failed_split(workdir, voc)
    assert f"is 8x10 (HxW) but its image {voc / 'JPEGImages' / VOC_IDS[1]}.jpg is 10x8 as displayed (its EXIF " \
           f"Orientation is 6; stored 8x10)" in text, text


@pytest.mark.slow
def test_split_csv_missing_a_class_column(cam_copy):
    # edited after the CAM net was trained from it: the net retrains, and must not on a class fewer
    train_csv = cam_copy / "results/splits/train.csv"
    pd.read_csv(train_csv, dtype=str).drop(columns="triangle").to_csv(train_csv, index=False)
    result = run_snakemake(cam_copy, "--cores", "2", "results/baseline/cam/model.pt", overlay=TINY, check=False)
    assert result.returncode != 0
    text = failure_text(cam_copy, result, "train_cam/baseline.log")
    assert "results/splits/train.csv lacks class columns ['triangle']" in text, text
    cam = cam_copy / "results/baseline/cam"
    assert_no_partial_output(cam / "model.pt", cam / "train_log.csv")


def test_unknown_method_in_a_target(tmp_path):
    result = run_snakemake(tmp_path, "--cores", "1", "results/nosuchmethod/miou.json", overlay=TINY, check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "unknown method 'nosuchmethod'" in text and "baseline, mixup, manifold_mixup" in text, text
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


@pytest.mark.slow
def test_model_file_that_is_a_pickle(cam_copy):
    model, marker = cam_copy / "results/baseline/cam/model.pt", cam_copy / "code_ran"
    model.write_bytes(pickle.dumps(RunsCodeWhenUnpickled(marker), protocol=2))
    result = run_snakemake(cam_copy, "--cores", "2", "results/baseline/cam/cams.h5", overlay=TINY, check=False)
    assert result.returncode != 0
    text = failure_text(cam_copy, result, "make_cams/baseline.log")
    assert "cannot load CAM model results/baseline/cam/model.pt: not a model file of this pipeline" in text, text
    assert f"{os.mkdir.__module__}.mkdir" in text, text  # what torch's reader refused (posix.mkdir)
    assert not marker.exists()  # the file's code never ran
    assert_no_partial_output(cam_copy / "results/baseline/cam/cams.h5")


@pytest.mark.slow
def test_cam_store_cut_short_mid_write(cam_copy):
    store = cam_copy / "results/baseline/cam/cams.h5"
    with h5py.File(store, "r") as handle:
        assert len(handle) == 8  # a complete store until cut
    store.write_bytes(store.read_bytes()[: store.stat().st_size // 2])
    result = run_snakemake(cam_copy, "--cores", "2", "results/baseline/cam/miou.json", overlay=TINY, check=False)
    assert result.returncode != 0
    text = failure_text(cam_copy, result, "eval_cams/baseline.log")
    assert "cannot open store results/baseline/cam/cams.h5" in text and "truncated file" in text, text
    assert_no_partial_output(cam_copy / "results/baseline/cam/miou.json")


@pytest.mark.slow
@pytest.mark.parametrize("hostile, refusal", [
    ("external raw storage", "keeps its data in external files"),
    ("NaN", "holds NaN or infinite values"),
])
def test_cam_store_holding_what_no_writer_of_ours_writes(cam_copy, hostile, refusal):
    store = cam_copy / "results/baseline/cam/cams.h5"
    train = pd.read_csv(cam_copy / "results/splits/train.csv", dtype=str, keep_default_na=False)
    image_id = train.loc[train["mask"] != "", "id"].iloc[0]  # an image eval_cams scores
    with h5py.File(store, "a") as handle:
        shape = handle[f"{image_id}/high_res"].shape
        del handle[f"{image_id}/high_res"]
        if hostile == "NaN":
            handle[f"{image_id}/high_res"] = np.full(shape, np.nan, np.float16)
        else:  # a plausible CAM, kept in a file outside the store (as it could be /etc/passwd)
            outside = cam_copy / "outside.bin"
            outside.write_bytes(np.full(shape, 0.5, np.float16).tobytes())
            handle[image_id].create_dataset("high_res", shape=shape, dtype=np.float16,
                                            external=[(str(outside), 0, outside.stat().st_size)])
    result = run_snakemake(cam_copy, "--cores", "2", "results/baseline/cam/miou.json", overlay=TINY, check=False)
    assert result.returncode != 0
    text = failure_text(cam_copy, result, "eval_cams/baseline.log")
    assert f"store results/baseline/cam/cams.h5: image '{image_id}' array 'high_res' {refusal}" in text, text
    assert_no_partial_output(cam_copy / "results/baseline/cam/miou.json")


@pytest.mark.parametrize("section", ["defaults", "methods.baseline"])
def test_config_value_of_the_wrong_type(tmp_path, section):
    overlay = {"device": "cpu"}
    node = overlay
    for part in section.split("."):
        node = node.setdefault(part, {})
    node["train_cam"] = {"epochs": "three"}
    result = run_snakemake(tmp_path, "--cores", "1", overlay=overlay, check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    key = "".join(f"[{part!r}]" for part in [*section.split("."), "train_cam", "epochs"])
    assert "'three' is not of type 'integer'" in text and f"On instance{key}" in text, text
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


# Numbers the schema cannot judge alone (NaN passes every minimum and maximum) and ranges out of order, each in the
# layer where it is written; the error names that key path and its value.
@pytest.mark.parametrize("section, block, expected", [
    ("defaults", {"eval_cams": {"threshold": float("nan")}}, "config key defaults.eval_cams.threshold is nan"),
    ("methods.fmix", {"train_cam": {"lr": float("inf")}}, "config key methods.fmix.train_cam.lr is inf"),
    ("defaults", {"eval_cams": {"sweep": [0.05, 0.5, 0]}},  # a zero step: the schema's error
     "0 is less than or equal to the minimum of 0"),
    ("defaults", {"eval_cams": {"sweep": [0.5, 0.05, 0.05]}},
     "config key defaults.eval_cams.sweep is [0.5, 0.05, 0.05]: expected [start, stop, step] with start <= stop"),
    ("synthetic.hparams", {"train_cam": {"resize_long": [200, 10]}},
     "config key synthetic.hparams.train_cam.resize_long is [200, 10]: expected [low, high] with low <= high"),
    ("protocols.sc_cam", {"segment": {"scale_range": [1.5, 0.5]}},
     "config key protocols.sc_cam.segment.scale_range is [1.5, 0.5]: expected [low, high] with low <= high"),
], ids=["threshold-nan", "lr-inf", "sweep-zero-step", "sweep-inverted", "resize_long-inverted", "scale_range-inverted"])
def test_config_number_not_finite_or_range_out_of_order(tmp_path, section, block, expected):
    overlay = {"device": "cpu"}
    node = overlay
    for part in section.split("."):
        node = node.setdefault(part, {})
    node.update(block)
    result = run_snakemake(tmp_path, "--cores", "1", overlay=overlay, check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert expected in text, text
    if "minimum" in expected:
        assert "On instance['defaults']['eval_cams']['sweep'][2]" in text, text
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


@pytest.mark.parametrize("override", ["defaults={train_cam: {epochs: 2}}", "train_cam={epochs: 2}"])
def test_nested_config_override_says_to_use_a_configfile(tmp_path, override):
    """Snakemake reads a nested --config value's numbers as strings, and takes `train_cam` for a top-level key: the
    schema's error (kept) gets a hint to write an overlay file instead."""
    result = run_snakemake(tmp_path, "--cores", "1", "--config", override, overlay={"device": "cpu"}, check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    schema_error = ("'2' is not of type 'integer'" if override.startswith("defaults")
                    else "Additional properties are not allowed ('train_cam' was unexpected)")
    assert schema_error in text, text
    assert ("nested keys cannot be set with --config" in text
            and "--configfile config/config.yaml my_overrides.yaml (README: Overriding settings)" in text), text
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()
