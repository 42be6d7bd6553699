"""Two writers of one output: the second is refused with a clear error and the output stays intact."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, run_snakemake, write_overlay
from overlays import TINY_SYNTHETIC
from wsss_lib.atomic import ConcurrentWriteError, atomic_path
from wsss_lib.store import StoreReader, open_store_writer

SECOND_WRITER = """
import sys
from wsss_lib.store import open_store_writer
try:
    with open_store_writer(sys.argv[1], {"method": "second"}) as store:
        store.write("img", cam=[[9.0]])
except Exception as error:
    print(type(error).__name__, error)
    sys.exit(3)
"""


def test_a_second_store_writer_is_refused_and_the_store_stays_intact(tmp_path):
    path = tmp_path / "cams.h5"
    with open_store_writer(path, {"method": "first"}) as store:
        store.write("img", cam=np.ones((2, 2)))
    with open_store_writer(path, {"method": "rewrite"}) as store:  # a rewrite in progress...
        store.write("img", cam=np.full((2, 2), 2.0))
        second = subprocess.run([sys.executable, "-c", SECOND_WRITER, str(path)], capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
        # ...refuses another process, naming the file, and leaves the finished store as it was
        assert second.returncode == 3 and "ConcurrentWriteError" in second.stdout, second.stdout + second.stderr
        assert str(path) in second.stdout
        with StoreReader(path) as reader:
            assert reader.attrs["method"] == "first" and np.array_equal(reader["img"]["cam"], np.ones((2, 2)))
    with StoreReader(path) as reader:  # the first writer completes normally
        assert reader.attrs["method"] == "rewrite" and np.array_equal(reader["img"]["cam"], np.full((2, 2), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cams.h5"]  # no lock or temporary left behind


def test_the_lock_is_freed_by_a_failed_or_killed_writer(tmp_path):
    path = tmp_path / "model.pt"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(path) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert not path.exists()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom wsss_lib.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n    print('holding', flush=True)\n    time.sleep(60)\n"), str(path)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(ConcurrentWriteError, match="model.pt"):
            with atomic_path(path):
                pass
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel releases the lock
        holder.wait(timeout=30)
    with atomic_path(path) as tmp:
        tmp.write_text("complete")
    assert path.read_text() == "complete"


@pytest.mark.slow
def test_two_workflows_on_one_results_tree_are_refused_by_snakemakes_lock(tmp_path):
    overlay = write_overlay(tmp_path, TINY_SYNTHETIC)
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
               "--configfile", str(REPO / "config/config.yaml"), str(overlay), "--cores", "1",
               "results/baseline/cam/model.pt"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        locks = tmp_path / ".snakemake/locks"
        while not (locks.is_dir() and any(locks.iterdir())):  # held from planning until the last job ends
            assert first.poll() is None and time.monotonic() < deadline, "first workflow ended without locking"
            time.sleep(0.2)
        second = run_snakemake(tmp_path, "--cores", "1", "results/baseline/cam/model.pt", overlay=TINY_SYNTHETIC,
                               check=False)
        assert second.returncode != 0
        assert "Directory cannot be locked" in second.stdout + second.stderr, second.stdout + second.stderr
        assert first.poll() is None  # the first one carries on
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    assert not (tmp_path / "results/baseline/cam/model.pt").exists()


def test_an_atomic_write_never_replaces_a_device(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # stands in for /dev/null, which a rename onto it would have replaced with a plain file
    with pytest.raises(ValueError, match=r"refusing to replace .*pipe: it is not a regular file or directory"):
        with atomic_path(fifo) as tmp:
            tmp.write_text("x")
    assert fifo.is_fifo()
