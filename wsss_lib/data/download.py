"""Checksummed downloads and safe tar extraction, both all-or-nothing.

A download lands on its destination only after its digest matched; an archive is extracted into a
temporary directory beside its destination and renamed into place only once it is complete, after
every member has been checked not to write outside it.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import posixpath
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

from wsss_lib.atomic import atomic_dir, atomic_path

CHUNK_SIZE = 1 << 20
# Seconds without any data before a stalled connection is given up (not a limit on the whole transfer).
SOCKET_TIMEOUT_S = 60.0
SUPPORTED_SCHEMES = ("http", "https", "file")


class ChecksumError(ValueError):
    """A downloaded (or existing) file does not have the expected digest."""


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the destination, or is not a plain file or directory."""


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in chunks so large archives do not need to fit in memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    checksum: str,
    algorithm: str = "md5",
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` and verify its ``algorithm`` digest equals ``checksum``.

    Returns ``dest`` at once if it already exists with the right digest. Otherwise the data is
    streamed into a temporary file beside ``dest`` that replaces it only once the digest matched;
    on a mismatch :class:`ChecksumError` is raised and no new file is left behind (an existing
    ``dest`` with a wrong digest is kept as it was rather than deleted).
    """
    dest = Path(dest)
    expected = checksum.strip().lower()
    hashlib.new(algorithm)  # fail on an unknown algorithm before touching the network
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in SUPPORTED_SCHEMES:
        raise ValueError(f"unsupported URL scheme {scheme!r} in {url}; expected one of {SUPPORTED_SCHEMES}")

    if dest.is_file() and file_digest(dest, algorithm) == expected:
        return dest

    with atomic_path(dest, suffix=".part") as tmp:
        actual = _fetch(url, tmp, algorithm=algorithm, progress=progress, label=dest.name)
        if actual != expected:
            # Raised inside the block so atomic_path removes the temporary and never renames it.
            raise ChecksumError(
                f"{algorithm} mismatch for {url} (destination {dest}): "
                f"expected {expected}, got {actual}"
            )
    return dest


def _fetch(url: str, tmp: Path, *, algorithm: str, progress: bool, label: str) -> str:
    """Stream ``url`` into ``tmp``, returning the hex digest of what was written."""
    digest = hashlib.new(algorithm)
    try:
        with urllib.request.urlopen(url, timeout=SOCKET_TIMEOUT_S) as response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=sys.stderr,
                disable=not progress,
            ) as bar:
                while chunk := response.read(CHUNK_SIZE):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError) as err:  # URLError/HTTPError are OSErrors too
        reason = getattr(err, "reason", None) or err
        raise OSError(f"cannot download {url} to {tmp.parent}: {reason}") from err
    return digest.hexdigest()


def safe_extract_tar(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract the tar ``archive`` (any compression) into the directory ``dest``.

    Only regular files and directories are extracted: a symlink, hard link, device or fifo member,
    an absolute path or a path escaping ``dest`` raises :class:`UnsafeArchiveError` naming the archive
    and the member, before anything is written. Each member's destination is checked again on the
    real filesystem just before it is written. A corrupt or truncated archive raises
    :class:`tarfile.ReadError` naming it. Either way nothing is left behind; an existing ``dest`` is
    replaced only by a complete extraction.
    """
    archive = Path(archive)
    dest = Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            # getmembers() reads the whole archive, so truncation is found before anything is written.
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member)
            with atomic_dir(dest) as tmp:
                root = os.path.realpath(tmp, strict=True)

                def checked(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
                    _check_destination(archive, member, tmp, root)
                    # tarfile's own "data" filter stays as a second layer only: on Python < 3.11.13 a
                    # symlink chain longer than PATH_MAX gets through it (CVE-2025-4517).
                    return tarfile.data_filter(member, path)

                tar.extractall(tmp, members=members, filter=checked)
    except tarfile.FilterError as err:
        name = err.tarinfo.name if err.tarinfo is not None else "?"
        raise UnsafeArchiveError(f"unsafe member {name!r} in archive {archive}: {err}") from err
    except FileNotFoundError:
        if not archive.exists():
            raise FileNotFoundError(f"archive not found: {archive}") from None
        raise
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as err:
        raise tarfile.ReadError(f"cannot read archive {archive} (corrupt or truncated?): {err}") from err
    except OSError as err:
        # Decompressors (bz2, gzip) report bad data as OSError without an errno; real I/O errors
        # (disk full, permissions) carry one and propagate unchanged.
        if err.errno is None:
            raise tarfile.ReadError(f"cannot read archive {archive} (corrupt or truncated?): {err}") from err
        raise
    return dest


def _refusal(archive: Path, member: tarfile.TarInfo, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"unsafe member {member.name!r} in archive {archive}: {why}")


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Raise :class:`UnsafeArchiveError` unless ``member`` is a file or directory named inside the root."""
    name = member.name
    if member.issym() or member.islnk():
        # Links are where every known escape from a name check lives (CVE-2025-4517 among them), and the
        # archives this pipeline extracts (VOC 2012, SBD) hold none, so none is accepted.
        raise _refusal(archive, member, f"{'symbolic' if member.issym() else 'hard'} link to {member.linkname!r}; "
                       "links are not extracted (the VOC and SBD archives contain none): use the official archive")
    if not (member.isreg() or member.isdir()):
        raise _refusal(archive, member, "not a regular file or directory (device, fifo or unknown type)")
    if _is_absolute(name):
        raise _refusal(archive, member, "absolute path")
    if _escapes(name):
        raise _refusal(archive, member, "path escapes the destination")


def _check_destination(archive: Path, member: tarfile.TarInfo, tmp: Path, root: str) -> None:
    """Raise :class:`UnsafeArchiveError` unless ``member``, written now, lands inside ``root``.

    The deepest part of its path that already exists is resolved strictly: non-strict realpath gives up
    silently on a path longer than PATH_MAX and returns it half-resolved, which is how CVE-2025-4517 fools
    tarfile's filter; strict resolution raises instead. What does not exist yet is created by the
    extraction as plain directories and the file itself.
    """
    path = os.path.join(tmp, member.name)
    existing, rest = path, ""
    while not os.path.lexists(existing):
        existing, tail = os.path.split(existing)
        rest = os.path.join(tail, rest) if rest else tail
    try:
        resolved = os.path.normpath(os.path.join(os.path.realpath(existing, strict=True), rest))
    except OSError as err:
        raise _refusal(archive, member, f"its destination cannot be resolved ({err.strerror or err})") from None
    if os.path.commonpath([root, resolved]) != root:
        raise _refusal(archive, member, f"it would be written to {resolved}, outside the destination")


def _is_absolute(name: str) -> bool:
    # Also refuse Windows-style roots and drives, which tar names should never contain.
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")


def _escapes(name: str) -> bool:
    normalised = posixpath.normpath(name.replace("\\", "/"))
    return normalised == ".." or normalised.startswith("../")
