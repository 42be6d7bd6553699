"""Write-then-rename helpers, so an interrupted or failed job never leaves a partial output behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds.

    The temporary lives in the same directory so the final ``os.replace`` is atomic. On any
    exception the temporary (file or directory) is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
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
