"""Write-then-rename helpers, so an interrupted or failed job never leaves a partial output behind.

Each write also holds an exclusive lock on its destination, so a second process writing the same
output (two workflows on one results tree without Snakemake's own lock, a job started by hand) fails
at once with an error naming the file, and the first writer's output is not mixed with its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


class ConcurrentWriteError(RuntimeError):
    """Another process is writing the same output."""


@contextlib.contextmanager
def writer_lock(dest: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock for writing ``dest`` (a ``.<name>.lock`` file beside it); fail at once if held.

    flock is released by the kernel when the holder dies, so a killed job leaves no stale lock. The lock
    file is removed on release; a waiter that opened it just before then re-checks that the file it
    locked is still the one on disk, so two writers can never both hold the lock.
    """
    dest = Path(dest)
    lock = dest.parent / f".{dest.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConcurrentWriteError(
                f"{dest} is being written by another process (it holds {lock}); "
                "wait for it to finish, or stop it, before writing this output again") from None
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file that its previous holder has just removed: take the new one
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


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
