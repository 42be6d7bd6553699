"""Integration: the real Snakemake workflow on a tiny synthetic config, in a temporary directory."""

import json

import h5py
import numpy as np
import pytest

from conftest import REPO, TINY_SYNTHETIC, run_snakemake


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    run_snakemake(workdir, "--cores", "2", "results/baseline/cam/miou.json", overlay=TINY_SYNTHETIC)
    return workdir


def test_learned_cams_beat_all_background(tiny_run):
    result = json.loads((tiny_run / "results/baseline/cam/miou.json").read_text())
    assert result["n_images"] == 48 and result["split"] == "train"
    # at the reference threshold and at the best one of the sweep
    assert result["miou"] > result["all_background_miou"] + 0.1, result
    assert result["best_miou"] > result["all_background_miou"] + 0.2, result
    assert [float(t) for t in result["sweep"]] == pytest.approx(np.arange(0.05, 0.51, 0.05))
    assert result["best_miou"] == max(result["sweep"].values()) >= result["miou"]  # 0.15 is in the sweep


def test_outputs_logs_and_store_layout(tiny_run):
    results = tiny_run / "results"
    log = (results / "baseline/cam/train_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,train_loss,lr,val_map") and len(log) == 1 + 30
    assert not (results / "baseline/cam/.resume/train_cam.pt").exists()  # removed on success
    with h5py.File(results / "baseline/cam/cams.h5", "r") as store:
        assert store.attrs["method"] == "baseline" and len(store) == 48
        group = store[next(iter(store))]
        keys, cam, high = group["keys"][()], group["cam"][()], group["high_res"][()]
        assert cam.dtype == np.float16 and high.shape == (len(keys), 64, 64) and cam.shape == (len(keys), 16, 16)
        assert np.allclose(high.reshape(len(keys), -1).max(1), 1.0, atol=1e-2)
    for rule in ("train_cam", "make_cams", "eval_cams"):
        assert (results / f"logs/{rule}/baseline.log").is_file()
        assert (results / f"benchmarks/{rule}/baseline.tsv").is_file()


def test_unknown_config_key_fails_before_any_job(tmp_path):
    result = run_snakemake(tmp_path, "-n", overlay={"defaults": {"train_cam": {"epochz": 3}}}, check=False)
    assert result.returncode != 0
    assert "epochz" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_lint_is_clean(tmp_path):
    result = run_snakemake(tmp_path, "--lint", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr
