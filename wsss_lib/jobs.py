"""What every workflow job does first, so that a hard stop of snakemake leaves nothing to clean by hand.

A job's script runs as a child process of snakemake. When snakemake is killed outright (SIGKILL, the OOM
killer, a closed terminal without a handler), nothing stops that child: it lives on as an orphan, trains
beside the job a rerun starts, and one of the two dies on the other's output. So a job

- holds the writer lock of each of its outputs from its start to its end (:func:`wsss_lib.atomic.writer_lock`):
  a second writer of the same outputs is refused, or waits for an orphan to stop, before it does any work;
- watches the snakemake process that started it and stops when it is gone, the way snakemake stops its jobs
  when it is interrupted: SIGTERM is turned into ``SystemExit``, so the ``finally`` clauses of the atomic
  writes remove their temporaries on the way out.

A job that is itself killed (SIGKILL) leaves its temporaries behind; the next writer of the same output removes
them when it takes the lock. wsss_lib never imports snakemake: the scripts pass their output paths.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import select
import signal
import sys
import threading
from pathlib import Path
from typing import Iterable

from wsss_lib.atomic import STARTED_BY_ENV, process_start_time, process_stat, writer_lock

# After SIGTERM, how long a job whose snakemake is gone may take to unwind (a batch on the GPU to finish, a store
# to close) before it exits without its clean-up; the next writer then removes what it left.
STOP_GRACE_S = 30.0


def start_job(outputs: Iterable[str | os.PathLike]) -> None:
    """Hold the writer locks of ``outputs`` until the process exits, and stop with the snakemake process that
    started this job (named by ``WSSS_SNAKEMAKE_PID``, set by rules/common.smk).

    Called by each workflow script once it has sent its output to its log (before it imports wsss_lib, so what
    the import prints is logged too).
    """
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    locks = contextlib.ExitStack()
    for output in outputs:
        locks.enter_context(writer_lock(output))
    atexit.register(locks.close)
    started_by = os.environ.get(STARTED_BY_ENV, "")
    if started_by.isdigit() and int(started_by) in _ancestors():
        threading.Thread(target=_stop_when_gone, args=(int(started_by),), name="snakemake-watch", daemon=True).start()


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _ancestors() -> list[int]:
    """The pids of this process's parent, its parent, ... up to init."""
    pids, pid = [], os.getppid()
    while pid > 1 and pid not in pids:
        pids.append(pid)
        fields = process_stat(pid)
        if fields is None:
            break
        pid = int(fields[1])  # field 4, the parent's pid
    return pids


def _stop_when_gone(pid: int) -> None:
    start = process_start_time(pid)
    try:
        handle = os.pidfd_open(pid)
    except OSError:  # a kernel before 5.3: poll instead
        handle = None
    if handle is not None and process_start_time(pid) == start:
        select.select([handle], [], [])  # readable once the process has exited
    elif start is not None:
        while process_start_time(pid) == start:
            threading.Event().wait(1.0)
    print(f"\nthe snakemake process (pid {pid}) that started this job is gone: stopping", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    threading.Event().wait(STOP_GRACE_S)
    print(f"still running {STOP_GRACE_S:.0f} s after SIGTERM: exiting without clean-up", flush=True)
    os._exit(128 + signal.SIGTERM)


# The run locks' file descriptors by path: kept open (and so their shared locks held) for the life of the process.
_run_locks: dict[Path, int] = {}


def release_stale_snakemake_locks(snakemake_dir: str | os.PathLike = ".snakemake") -> list[Path]:
    """Remove the locks that a killed snakemake left in ``snakemake_dir``/locks; return those removed.

    Snakemake writes its locks as plain files and removes them on exit; killed, it leaves them, and every later
    run in the directory stops with "Directory cannot be locked" until ``--unlock``. Every snakemake process of
    this workflow calls this at start (rules/common.smk) and holds a shared flock on ``<snakemake_dir>/wsss_run.lock``
    until it exits (the kernel releases it when the process dies, however it dies). Getting that lock exclusively
    therefore means no other snakemake is running here, so any lock on disk is stale.
    """
    directory = Path(snakemake_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = (directory / "wsss_run.lock").resolve()
    if path in _run_locks:  # this process's own hold does not count (a workflow parsed twice in one process)
        os.close(_run_locks.pop(path))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    removed = []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pass  # another snakemake is running here: its locks are live, and snakemake's own check applies
    else:
        locks = directory / "locks"
        removed = sorted(locks.glob("*.lock")) if locks.is_dir() else []
        for lock in removed:
            lock.unlink(missing_ok=True)
        if removed:
            print(f"wsss: removed the lock of a snakemake that was killed ({', '.join(p.name for p in removed)} in "
                  f"{locks}); no other snakemake is running in this directory", file=sys.stderr, flush=True)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _run_locks[path] = fd
    return removed
