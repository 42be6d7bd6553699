"""Integration: the voc12 download chain (download -> checksum -> safe extraction -> SBD conversion ->
split tables) on small fake VOC / SBD archives served from file:// URLs, and the real VOC sample."""

import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest
import scipy.io
from PIL import Image

from conftest import add_path_max_chain, run_snakemake
from wsss_lib.data.download import file_digest
from wsss_lib.data.label_png import write_label_png

pytestmark = pytest.mark.slow  # runs Snakemake jobs: `pytest -m "not slow"` skips it

VOC_TRAIN, VOC_VAL, SBD_ONLY = ["2007_000001", "2007_000002"], ["2007_000003"], ["2008_000004", "2008_000005"]


def add_bytes(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def png_bytes(labels, tmp_path):
    path = tmp_path / "mask.png"
    write_label_png(path, labels)  # with the VOC palette, as the real masks
    return path.read_bytes()


def make_archives(tmp_path, evil=False, link_chain=False):
    voc_tar, sbd_tgz = tmp_path / "voc.tar", tmp_path / "sbd.tgz"
    with tarfile.open(voc_tar, "w") as tar:
        base = "VOCdevkit/VOC2012/"
        for i, image_id in enumerate(VOC_TRAIN + VOC_VAL + SBD_ONLY):
            buffer = io.BytesIO()
            Image.new("RGB", (10, 8), (30 * i, 20, 20)).save(buffer, format="JPEG")
            add_bytes(tar, f"{base}JPEGImages/{image_id}.jpg", buffer.getvalue())
        for i, image_id in enumerate(VOC_TRAIN + VOC_VAL):
            mask = np.zeros((8, 10), np.uint8)
            mask[2:6, 2:6] = i + 1  # aeroplane, bicycle, bird
            add_bytes(tar, f"{base}SegmentationClass/{image_id}.png", png_bytes(mask, tmp_path))
        add_bytes(tar, f"{base}ImageSets/Segmentation/train.txt", "\n".join(VOC_TRAIN).encode())
        add_bytes(tar, f"{base}ImageSets/Segmentation/val.txt", "\n".join(VOC_VAL).encode())
        if evil:
            add_bytes(tar, "../../escaped.txt", b"gotcha")
        if link_chain:
            # extracted by prepare_voc12 into <workdir>/data/voc12/.prepare_voc12.<8>/.voc.<8>.tmp; 4 levels up
            # from there is the workdir
            extraction_dir = tmp_path / "data/voc12/.prepare_voc12.12345678/.voc.12345678.tmp"
            add_path_max_chain(tar, len(str(extraction_dir)), "escape", b"gotcha", up=4)
    with tarfile.open(sbd_tgz, "w:gz") as tar:
        for image_id in SBD_ONLY + VOC_VAL:
            mask = np.zeros((8, 10), np.uint8)
            mask[1:4, 1:9] = 12  # dog
            buffer = io.BytesIO()
            scipy.io.savemat(buffer, {"GTcls": {"Segmentation": mask}})
            add_bytes(tar, f"benchmark_RELEASE/dataset/cls/{image_id}.mat", buffer.getvalue())
        add_bytes(tar, "benchmark_RELEASE/dataset/train.txt", SBD_ONLY[0].encode())
        add_bytes(tar, "benchmark_RELEASE/dataset/val.txt", "\n".join([SBD_ONLY[1], VOC_VAL[0]]).encode())
    return voc_tar, sbd_tgz


def voc12_overlay(voc_tar, sbd_tgz, voc_md5=None):
    return {"dataset": "voc12", "voc12": {
        "voc_url": voc_tar.as_uri(), "voc_md5": voc_md5 or file_digest(voc_tar),
        "sbd_url": sbd_tgz.as_uri(), "sbd_md5": file_digest(sbd_tgz)}}


def test_download_chain_builds_train_aug_splits(tmp_path):
    voc_tar, sbd_tgz = make_archives(tmp_path)
    run_snakemake(tmp_path, "--cores", "2", "results/splits/train_aug.csv", "results/splits/val.csv",
                  overlay=voc12_overlay(voc_tar, sbd_tgz))
    train_aug = pd.read_csv(tmp_path / "results/splits/train_aug.csv", dtype={"id": str})
    # train_aug = SBD train + SBD val + VOC train - VOC val
    assert sorted(train_aug["id"]) == sorted(VOC_TRAIN + SBD_ONLY)
    by_id = train_aug.set_index("id")
    assert by_id.loc["2007_000002", "bicycle"] == 1 and by_id.loc["2008_000004", "dog"] == 1
    assert by_id.loc["2008_000004", "mask"].endswith("SegmentationClassAug/2008_000004.png")
    assert (tmp_path / "data/voc12/VOC2012/SegmentationClassAug/2007_000003.png").is_file()


def test_checksum_mismatch_fails_and_leaves_nothing(tmp_path):
    voc_tar, sbd_tgz = make_archives(tmp_path)
    result = run_snakemake(tmp_path, "--cores", "1", "results/splits/train.csv",
                           overlay=voc12_overlay(voc_tar, sbd_tgz, voc_md5="0" * 32), check=False)
    assert result.returncode != 0
    log = (tmp_path / "results/logs/download_voc.log").read_text()
    assert "0" * 32 in log and file_digest(voc_tar) in log and voc_tar.as_uri() in log
    assert not list((tmp_path / "data/downloads").glob("*VOCtrainval*"))
    assert not (tmp_path / "data/voc12/VOC2012").exists()


def test_escaping_tar_member_fails_and_leaves_nothing(tmp_path):
    voc_tar, sbd_tgz = make_archives(tmp_path, evil=True)
    result = run_snakemake(tmp_path, "--cores", "1", "results/splits/train.csv",
                           overlay=voc12_overlay(voc_tar, sbd_tgz), check=False)
    assert result.returncode != 0
    assert "escaped.txt" in (tmp_path / "results/logs/prepare_voc12.log").read_text()
    assert not (tmp_path / "data/voc12/VOC2012").exists()
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path.parent / "escaped.txt").exists()
    voc12_dir = tmp_path / "data/voc12"
    assert not voc12_dir.exists() or not any(voc12_dir.iterdir())  # no temporary left either


def test_cve_2025_4517_link_chain_fails_naming_archive_and_member(tmp_path):
    voc_tar, sbd_tgz = make_archives(tmp_path, link_chain=True)
    result = run_snakemake(tmp_path, "--cores", "1", "results/splits/train.csv",
                           overlay=voc12_overlay(voc_tar, sbd_tgz), check=False)
    assert result.returncode != 0
    log = (tmp_path / "results/logs/prepare_voc12.log").read_text()
    assert "unsafe member 'a' in archive " in log and "VOCtrainval_11-May-2012.tar: symbolic link to 'ddd" in log
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path.parent / "escaped.txt").exists()
    voc12_dir = tmp_path / "data/voc12"
    assert not voc12_dir.exists() or not any(voc12_dir.iterdir())


def test_baseline_cam_on_real_voc_sample(voc_sample, tmp_path):
    """One method on real photos: efficientnet_lite0 (ImageNet weights from its package), tiny schedule."""
    overlay = {"dataset": "voc12", "device": "cpu", "voc12": {"root": str(voc_sample), "hparams": {
        "backbone": "efficientnet_lite0", "pretrained": "imagenet",
        "train_cam": {"epochs": 1, "batch_size": 8, "crop": 160, "resize_long": [160, 200], "lr": 0.01,
                      "momentum": 0.9},
        "make_cams": {"scales": [0.5], "batch_size": 4}}}}
    run_snakemake(tmp_path, "--cores", "2", "results/baseline/cam/miou.json", overlay=overlay)
    result = json.loads((tmp_path / "results/baseline/cam/miou.json").read_text())
    assert result["n_images"] == 120
    assert {"dog", "cat", "person"} <= set(result["classes_present"])
    # train_cam seeds 0-2: CAM 0.108-0.114 against all-background 0.043 (margin >= 0.065)
    assert result["miou"] > result["all_background_miou"], result
