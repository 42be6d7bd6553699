"""End to end: the real workflow killed (SIGKILL, whole process group) in the middle of train_cam.

A rerun of a changed job discards the state with a log line instead of continuing it; a rerun of
the same job (`--rerun-incomplete`) resumes from its last saved state and ends with the weights of
an uninterrupted run."""

from __future__ import annotations

import copy
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, write_overlay
from overlays import TINY_SYNTHETIC

pytestmark = pytest.mark.slow  # runs Snakemake jobs: `pytest -m "not slow"` skips it

TARGET = "results/baseline/cam/model.pt"
JOB_LOG = "results/logs/train_cam/baseline.log"
STATE = "results/baseline/cam/.resume/train_cam.pt"
SAVED = re.compile(r"saved resume state at step (\d+)/(\d+)")
EPOCHS, STEPS_PER_EPOCH = 3, 4  # 32 images, batch 8; a state after epochs 1 and 2
RUN_TIMEOUT = 300  # seconds any one snakemake run may take before the test fails


def overlay(lr: float = 0.02) -> dict:
    """TINY_SYNTHETIC at 32 pixels and 3 epochs: the job is killed mid-way, yet the test stays short."""
    config = copy.deepcopy(TINY_SYNTHETIC)
    config["synthetic"].update(n_train=32, n_train_aug=32, n_val=8, image_size=32)
    config["synthetic"]["hparams"]["train_cam"].update(epochs=EPOCHS, lr=lr, crop=32, resize_long=[28, 36])
    config["resume"] = {"every_epochs": 1, "every_iterations": 200}
    return config


def start(workdir: Path, *args: str, config: dict) -> subprocess.Popen:
    """Start snakemake in its own process group (so the test can kill it with its jobs), output to a file."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
               str(workdir), "--configfile", str(REPO / "config" / "config.yaml"),
               str(write_overlay(workdir, config)), "--cores", "2", *args]
    with open(workdir / "snakemake.out", "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL snakemake and its jobs (one process group), and wait until none of them is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while True:  # the jobs are reaped by init, not by us
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"processes of group {proc.pid} outlived SIGKILL")
        time.sleep(0.05)


def finish(proc: subprocess.Popen, workdir: Path) -> None:
    try:
        proc.wait(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        pytest.fail(f"snakemake ran longer than {RUN_TIMEOUT} s in {workdir}")
    if proc.returncode != 0:
        pytest.fail(f"snakemake failed ({proc.returncode}):\n{(workdir / 'snakemake.out').read_text()[-4000:]}")


def run(workdir: Path, *args: str, config: dict) -> None:
    finish(start(workdir, *args, config=config), workdir)


def kill_when(proc: subprocess.Popen, workdir: Path, done) -> str:
    """SIGKILL snakemake and its jobs as soon as ``done(job log text)`` holds; return the job log then."""
    log, deadline = workdir / JOB_LOG, time.monotonic() + RUN_TIMEOUT
    try:
        while not (log.is_file() and done(log.read_text())):
            if proc.poll() is not None:
                output = (workdir / "snakemake.out").read_text()[-4000:]
                pytest.fail(f"snakemake ended before it could be killed:\n{output}")
            if time.monotonic() > deadline:
                pytest.fail(f"{log} did not reach the expected line within {RUN_TIMEOUT} s")
            time.sleep(0.05)
    finally:
        kill_group(proc)
    return log.read_text()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A workdir holding the synthetic data and split tables, to be copied: the runs below start at train_cam."""
    workdir = tmp_path_factory.mktemp("prepared")
    run(workdir, "results/splits/train.csv", "results/splits/val.csv", config=overlay())
    return workdir


def copy_of(prepared: Path, tmp_path: Path, name: str) -> Path:
    workdir = tmp_path / name
    shutil.copytree(prepared, workdir, symlinks=True)  # keeps mtimes and .snakemake records: nothing reruns
    return workdir


def model_tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def log_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in ("seconds", "data_wait")} for row in csv.DictReader(handle)]


def test_killed_training_discards_a_changed_jobs_state_and_resumes_its_own_exactly(prepared, tmp_path):
    # the uninterrupted run to compare with, alongside the interrupted one (its own workdir)
    reference = copy_of(prepared, tmp_path, "reference")
    reference_run = start(reference, TARGET, config=overlay())

    try:
        # 1. A run with another learning rate is killed once it has saved a state. (The killed runs take
        #    no lock, so the reruns need no `--unlock`; the partial train_log.csv still marks the job
        #    incomplete, as after a real preemption.)
        workdir = copy_of(prepared, tmp_path, "interrupted")
        kill_when(start(workdir, TARGET, "--nolock", config=overlay(lr=0.03)), workdir, SAVED.search)
        assert not (workdir / TARGET).exists() and (workdir / STATE).is_file()
        other_fingerprint = torch.load(workdir / STATE, weights_only=True)["fingerprint"]

        # 2. The rerun with the configured learning rate is another job: it discards that state with a log
        #    line naming both fingerprints, trains from scratch, and is killed after saving its own state.
        log = kill_when(start(workdir, TARGET, "--rerun-incomplete", "--nolock", config=overlay()), workdir,
                        lambda text: "discarding" in text and SAVED.search(text))
        discard = re.search(rf"discarding resume state {re.escape(STATE)}: it was saved by a job with fingerprint "
                            rf"(\w+), this job's is (\w+)", log)
        assert discard, log
        assert discard[1] == other_fingerprint != discard[2]
        assert "resuming" not in log
        saved = [(int(step), int(total)) for step, total in SAVED.findall(log)]
        # its first state follows its first epoch: it started from scratch
        assert saved[0] == (STEPS_PER_EPOCH, EPOCHS * STEPS_PER_EPOCH), saved
        last_step, total = saved[-1]
        assert last_step < total and not (workdir / TARGET).exists()  # killed mid-way

        # 3. The same job rerun resumes from the last state it saved and completes.
        run(workdir, TARGET, "--rerun-incomplete", config=overlay())
        log = (workdir / JOB_LOG).read_text()
        assert f"resuming from {STATE} at step {last_step}/{total}" in log, log
        assert "discarding" not in log
        assert not (workdir / STATE).exists()  # removed on success
    except BaseException:
        kill_group(reference_run)
        raise
    finish(reference_run, reference)
    expected, got = model_tensors(reference / TARGET), model_tensors(workdir / TARGET)
    assert list(got) == list(expected)
    # Exact: on CPU, with the same thread count, the resumed run repeats the uninterrupted run's
    # computation operation for operation (same samples, augmentations, RNG draws, optimizer state).
    unequal = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not unequal, f"tensors differ after resuming: {unequal}"
    log_csv = "results/baseline/cam/train_log.csv"
    assert log_rows(workdir / log_csv) == log_rows(reference / log_csv)  # all but the timings
