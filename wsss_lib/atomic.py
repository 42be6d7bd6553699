"""Write-then-rename helpers, so an interrupted or failed job never leaves a partial output behind.

Each write also holds an exclusive lock on its destination, so a second process writing the same
output (two workflows on one results tree without Snakemake's own lock, a job started by hand) fails
at once with an error naming the file, and the first writer's output is not mixed with its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator


class ConcurrentWriteError(RuntimeError):
    """Another process is writing the same output."""


# Outputs whose writer lock this process holds: a job holds its outputs' locks for its whole run (wsss_lib/jobs.py),
# and the atomic writes inside it take the same locks again.
_held_locks: dict[Path, int] = {}
# A job whose snakemake was killed stops by itself (wsss_lib/jobs.py); a rerun started meanwhile waits this long for
# it to let go of the output before refusing.
ORPHAN_WAIT_S = 60.0
STARTED_BY_ENV = "WSSS_SNAKEMAKE_PID"


@contextlib.contextmanager
def writer_lock(dest: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock for writing ``dest`` (a ``.<name>.lock`` file beside it); fail at once if held.

    flock is released by the kernel when the holder dies, so a killed job leaves no stale lock. The lock
    file is removed on release; a waiter that opened it just before then re-checks that the file it
    locked is still the one on disk, so two writers can never both hold the lock. Taking it again in the
    process that holds it is a no-op.

    The lock file records its holder (pid, host, and the snakemake process that started it). A holder whose
    snakemake is gone is a job orphaned by a killed snakemake: it stops by itself, and is waited for up to
    :data:`ORPHAN_WAIT_S`; any other holder is refused at once, naming its pid.

    Whoever holds the lock owns ``dest``'s temporaries: any left beside it (by a writer killed before it could
    remove them) are removed on taking it.
    """
    dest = Path(os.path.abspath(dest))
    if dest in _held_locks:
        _held_locks[dest] += 1
        try:
            yield
        finally:
            _held_locks[dest] -= 1
        return
    lock = dest.parent / f".{dest.name}.lock"
    fd = _take_lock(dest, lock)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_holder_record()).encode(), 0)
    _held_locks[dest] = 1
    try:
        remove_dead_temporaries(dest)
        yield
    finally:
        del _held_locks[dest]
        lock.unlink(missing_ok=True)
        os.close(fd)


def _take_lock(dest: Path, lock: Path) -> int:
    deadline, told = None, False
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            if not _is_orphan(holder):
                raise ConcurrentWriteError(
                    f"{dest} is being written by another process ({_describe(holder)}; it holds {lock}); "
                    "wait for it to finish, or stop it, before writing this output again") from None
            if deadline is None:
                deadline = time.monotonic() + ORPHAN_WAIT_S
            if time.monotonic() > deadline:
                raise ConcurrentWriteError(
                    f"{dest} is still being written by pid {holder['pid']}, a job left running by a snakemake that "
                    f"was killed (pid {holder['started_by'][0]}); it did not stop within {ORPHAN_WAIT_S:.0f} s: "
                    f"stop it (kill {holder['pid']}) and run the same command again") from None
            if not told:
                print(f"waiting for pid {holder['pid']}, a job of a snakemake that was killed, to stop writing {dest}",
                      file=sys.stderr, flush=True)
                told = True
            time.sleep(0.2)
            continue
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file that its previous holder has just removed: take the new one


def process_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3, the state, first), None if there is no such
    process. The name is skipped by its closing parenthesis: it may hold spaces and parentheses itself."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot, /proc/<pid>/stat field 22), None if there is
    none: with the pid it names one process, even after the pid is reused."""
    fields = process_stat(pid)
    return None if fields is None else int(fields[19])


def _holder_record() -> dict:
    started_by = os.environ.get(STARTED_BY_ENV, "")
    pid = int(started_by) if started_by.isdigit() else None
    return {"pid": os.getpid(), "start": process_start_time(os.getpid()), "host": socket.gethostname(),
            "started_by": None if pid is None else [pid, process_start_time(pid)]}


def _read_holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        holder = {}
    return holder if isinstance(holder, dict) else {}


def _is_orphan(holder: dict) -> bool:
    """Whether the lock's holder is a live job on this host whose snakemake has gone (pid reuse ruled out)."""
    started_by = holder.get("started_by")
    if holder.get("host") != socket.gethostname() or not isinstance(started_by, list) or len(started_by) != 2:
        return False
    pid, start = started_by
    return isinstance(pid, int) and process_start_time(pid) != start


def _describe(holder: dict) -> str:
    if "pid" not in holder:
        return "a process that did not say which"
    where = "" if holder.get("host") == socket.gethostname() else f" on {holder.get('host')}"
    started_by = holder.get("started_by")
    by = f", started by snakemake pid {started_by[0]}" if isinstance(started_by, list) and started_by else ""
    return f"pid {holder['pid']}{where}{by}"


def _temporary_pattern(dest: Path) -> re.Pattern:
    # atomic_path's temporaries: mkstemp's 8 random characters between ".<name>." and "<suffix>.tmp"
    return re.compile(rf"\.{re.escape(dest.name)}\.[a-z0-9_]{{8}}(\.[^/]*)?\.tmp")


def remove_dead_temporaries(dest: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``dest`` left beside it by writers that were killed (SIGKILL, the OOM killer, a
    node lost): call only while holding ``dest``'s writer lock, so no live writer owns them. Returns what went."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    pattern = _temporary_pattern(dest)
    removed = [path for path in dest.parent.iterdir() if pattern.fullmatch(path.name)]
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        print(f"removed {path}, left by a writer of {dest} that was killed", file=sys.stderr, flush=True)
    return removed


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds.

    The temporary lives in the same directory so the final ``os.replace`` is atomic. On any
    exception the temporary (file or directory) is removed and ``dest`` is left untouched. A second
    writer of ``dest`` meanwhile gets :class:`ConcurrentWriteError` (see :func:`writer_lock`).
    """
    dest = Path(dest)
    # the rename would replace whatever is there: a device (/dev/null as a throwaway output) or a FIFO included
    if dest.exists() and not (dest.is_file() or dest.is_dir()):
        raise ValueError(f"refusing to replace {dest}: it is not a regular file or directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with writer_lock(dest):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        tmp.unlink()  # callers create it themselves (file or directory)
        try:
            yield tmp
            if not tmp.exists():
                raise FileNotFoundError(f"atomic write to {dest} produced nothing at {tmp}")
            os.replace(tmp, dest)
        except BaseException:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()
            raise


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory: the block fills a fresh temporary directory.

    An existing ``dest`` is replaced only once the new one is complete.
    """
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
