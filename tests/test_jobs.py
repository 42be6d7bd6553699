"""Hard stops: a rerun after snakemake (or a job) was killed with SIGKILL runs as the same command, with no orphaned job
writing beside it, no stale lock, and no temporary left behind (wsss_lib/jobs.py, wsss_lib/atomic.py)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, run_snakemake, write_overlay
from overlays import HARD_STOP
from wsss_lib import atomic
from wsss_lib.atomic import ConcurrentWriteError, atomic_path, remove_dead_temporaries, writer_lock
from wsss_lib.jobs import release_stale_snakemake_locks
from wsss_lib.store import StoreReader

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def python(code: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True,
                            env={**ENV, **(env or {})})


def wait_for(condition, what: str, timeout: float = 120.0, every: float = 0.02, running: subprocess.Popen = None):
    """``condition()``'s first true value, polled; fails past ``timeout`` s or once ``running`` has ended."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert running is None or running.poll() is None, f"{running.args} ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return value


def test_a_killed_writers_temporaries_are_removed_by_the_next_writer(tmp_path):
    dest = tmp_path / "cams.h5"
    holder = python("import sys, time\nfrom wsss_lib.atomic import atomic_path\n"
                    "with atomic_path(sys.argv[1], suffix='.h5') as tmp:\n"
                    "    tmp.write_text('half a store')\n    print(tmp, flush=True)\n    time.sleep(60)\n", str(dest))
    left = Path(holder.stdout.readline().strip())
    holder.kill()  # SIGKILL: its finally clause never runs
    holder.wait(timeout=30)
    assert left.is_file() and left.name.startswith(".cams.h5.") and left.name.endswith(".h5.tmp")
    # what is not a temporary of cams.h5 stays: another output's, whose name starts the same, and other files
    others = [tmp_path / ".cams.h5.x.abcdefgh.tmp", tmp_path / ".other.h5.abcdefgh.h5.tmp", tmp_path / "cams.h5.txt"]
    for other in others:
        other.write_text("keep")
    dead_dir = tmp_path / ".cams.h5.k2j4h6g8.tmp"  # a directory output's temporary (atomic_dir)
    (dead_dir / "sub").mkdir(parents=True)
    with atomic_path(dest, suffix=".h5") as tmp:
        assert not left.exists() and not dead_dir.exists()
        tmp.write_text("complete")
    assert dest.read_text() == "complete"
    assert all(other.read_text() == "keep" for other in others)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["cams.h5", *(o.name for o in others)])


def test_temporaries_are_only_removed_under_the_lock(tmp_path):
    dest = tmp_path / "model.pt"
    dead = tmp_path / ".model.pt.abcdefgh.pt.tmp"
    dead.write_text("x")
    with writer_lock(dest):
        assert not dead.exists()
        dead.write_text("x")
        with writer_lock(dest):  # taken again by its holder: a no-op, nothing removed, nothing refused
            assert dead.exists()
        assert (tmp_path / ".model.pt.lock").exists()  # the outer hold goes on
    assert not (tmp_path / ".model.pt.lock").exists()
    assert remove_dead_temporaries(dest) == [dead]


# A stand-in for snakemake: it names itself as the starter of its child (as rules/common.smk does), which holds the
# lock of an output and ignores SIGTERM: a job stuck where it cannot stop.
FAKE_SNAKEMAKE = """
import os, subprocess, sys
os.environ["WSSS_SNAKEMAKE_PID"] = str(os.getpid())
child = subprocess.Popen([sys.executable, "-c", '''
import signal, sys, time
from wsss_lib.atomic import writer_lock
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with writer_lock(sys.argv[1]):
    print(flush=True)
    time.sleep(120)
''', sys.argv[1]], stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print(child.pid, flush=True)
child.wait()
"""


def test_an_output_held_by_a_job_whose_snakemake_is_gone_is_waited_for_then_refused(tmp_path, monkeypatch):
    dest = tmp_path / "model.pt"
    snakemake = python(FAKE_SNAKEMAKE, str(dest))
    orphan = int(snakemake.stdout.readline())
    try:
        with pytest.raises(ConcurrentWriteError, match=rf"being written by another process \(pid {orphan}, "
                                                       rf"started by snakemake pid {snakemake.pid};"):
            with writer_lock(dest):
                pass
        snakemake.kill()
        snakemake.wait(timeout=30)
        monkeypatch.setattr(atomic, "ORPHAN_WAIT_S", 1.0)
        started = time.monotonic()
        with pytest.raises(ConcurrentWriteError, match=rf"pid {orphan}, a job left running by a snakemake that was "
                                                       rf"killed \(pid {snakemake.pid}\).*kill {orphan}"):
            with writer_lock(dest):
                pass
        assert time.monotonic() - started >= 1.0  # it waited for the orphan to stop first
    finally:
        os.kill(orphan, signal.SIGKILL)
    with writer_lock(dest):  # the kernel released the dead orphan's lock
        pass


def test_stale_snakemake_locks_are_removed_only_when_no_snakemake_runs(tmp_path):
    snakemake_dir = tmp_path / ".snakemake"
    (snakemake_dir / "locks").mkdir(parents=True)
    stale = snakemake_dir / "locks" / "0.output.lock"
    stale.write_text("results/baseline/cam/model.pt\n")
    running = python("import sys, time\nfrom wsss_lib.jobs import release_stale_snakemake_locks\n"
                     "print(release_stale_snakemake_locks(sys.argv[1]), flush=True)\ntime.sleep(60)\n",
                     str(snakemake_dir))
    try:
        assert running.stdout.readline().strip() == f"[PosixPath('{stale}')]"  # alone: the lock was stale
        stale.write_text("results/baseline/cam/model.pt\n")  # now it is the running one's
        assert release_stale_snakemake_locks(snakemake_dir) == [] and stale.exists()
    finally:
        running.kill()
        running.wait(timeout=30)
    assert release_stale_snakemake_locks(snakemake_dir) == [stale] and not stale.exists()


def start_snakemake(workdir: Path, target: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(REPO / "config/config.yaml"), str(write_overlay(workdir, HARD_STOP)),
               "--cores", "2", target]
    # its own process group, so the test can tell when every process it started has ended
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir, env=ENV,
                            start_new_session=True)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_snakemake_killed_mid_training_reruns_as_the_same_command(tmp_path):
    cam = tmp_path / "results/baseline/cam"
    log = tmp_path / "results/logs/train_cam/baseline.log"
    snakemake = start_snakemake(tmp_path, "results/baseline/cam/model.pt")
    try:
        wait_for(lambda: log.is_file() and "saved resume state" in log.read_text(), "the first resume state",
                 running=snakemake)
        os.kill(snakemake.pid, signal.SIGKILL)  # snakemake alone: its training job is orphaned
        snakemake.wait(timeout=30)
        wait_for(lambda: not group_alive(snakemake.pid), "the orphaned training job to stop", timeout=60, every=0.2)
    finally:
        if group_alive(snakemake.pid):
            os.killpg(snakemake.pid, signal.SIGKILL)
    assert "that started this job is gone: stopping" in log.read_text()
    assert not (cam / "model.pt").exists() and (tmp_path / ".snakemake/locks").is_dir()
    rerun = run_snakemake(tmp_path, "--cores", "2", "results/baseline/cam/model.pt", overlay=HARD_STOP)
    assert "removed the lock of a snakemake that was killed" in rerun.stderr, rerun.stderr
    assert "resuming from results/baseline/cam/.resume/train_cam.pt" in log.read_text()
    assert (cam / "model.pt").is_file()
    assert sorted(p.name for p in cam.iterdir() if p.name != ".resume") == ["model.pt", "train_log.csv"]


@pytest.mark.slow
def test_snakemake_and_its_job_killed_mid_store_write_rerun_as_the_same_command(tmp_path):
    run_snakemake(tmp_path, "--cores", "2", "results/baseline/cam/model.pt", overlay=HARD_STOP)
    cam = tmp_path / "results/baseline/cam"
    snakemake = start_snakemake(tmp_path, "results/baseline/cam/cams.h5")
    try:
        left = wait_for(lambda: list(cam.glob(".cams.h5.*.h5.tmp")), "the store's temporary", running=snakemake)
        os.killpg(snakemake.pid, signal.SIGKILL)  # snakemake and the job: nothing is cleaned up
        snakemake.wait(timeout=30)
    finally:
        if group_alive(snakemake.pid):
            os.killpg(snakemake.pid, signal.SIGKILL)
    assert all(path.exists() for path in left) and not (cam / "cams.h5").exists()
    rerun = run_snakemake(tmp_path, "--cores", "2", "results/baseline/cam/cams.h5", overlay=HARD_STOP)
    assert "removed the lock of a snakemake that was killed" in rerun.stderr, rerun.stderr
    log = (tmp_path / "results/logs/make_cams/baseline.log").read_text()
    assert f"removed {left[0]}, left by a writer of {cam / 'cams.h5'} that was killed" in log, log
    assert sorted(p.name for p in cam.iterdir() if p.name != ".resume") == ["cams.h5", "model.pt", "train_log.csv"]
    train_ids = pd.read_csv(tmp_path / "results/splits/train.csv", dtype=str)["id"].tolist()
    with StoreReader(cam / "cams.h5") as store:  # complete: every image of the split it covers
        assert sorted(store.ids()) == sorted(train_ids) and len(train_ids) == 32
