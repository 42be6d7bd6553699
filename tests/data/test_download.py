"""Tests for checksummed downloads and safe tar extraction (local file:// URLs only)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from conftest import add_path_max_chain
from wsss_lib.data import download as download_module
from wsss_lib.data.download import (
    ChecksumError,
    UnsafeArchiveError,
    download,
    file_digest,
    safe_extract_tar,
)

PAYLOAD = os.urandom(3 * (1 << 20) + 123)  # spans several download chunks


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "payload.bin"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_file_digest(source: Path) -> None:
    assert file_digest(source) == md5(PAYLOAD)
    assert file_digest(source, "sha256") == hashlib.sha256(PAYLOAD).hexdigest()


def test_download_file_url(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "out" / "payload.bin"
    result = download(source.as_uri(), dest, checksum=md5(PAYLOAD).upper(), progress=True)
    assert result == dest
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["payload.bin"]
    assert "payload.bin" in capsys.readouterr().err  # tqdm bar goes to stderr


def test_download_checksum_mismatch_leaves_nothing(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "payload.bin"
    wrong = "0" * 32
    url = source.as_uri()
    with pytest.raises(ChecksumError) as excinfo:
        download(url, dest, checksum=wrong, progress=False)
    message = str(excinfo.value)
    assert wrong in message
    assert md5(PAYLOAD) in message
    assert url in message
    assert str(dest) in message
    assert list(dest.parent.iterdir()) == []  # neither dest nor a temporary


def test_download_skips_existing_good_file(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "payload.bin"
    url = source.as_uri()
    download(url, dest, checksum=md5(PAYLOAD), progress=False)
    source.unlink()  # a second download attempt would now fail
    assert download(url, dest, checksum=md5(PAYLOAD), progress=False) == dest
    assert dest.read_bytes() == PAYLOAD


def test_download_replaces_existing_bad_file(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "payload.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"stale")
    download(source.as_uri(), dest, checksum=md5(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_missing_source_names_url(tmp_path: Path) -> None:
    url = (tmp_path / "nope.bin").as_uri()
    dest = tmp_path / "out" / "nope.bin"
    with pytest.raises(OSError, match="nope.bin") as excinfo:
        download(url, dest, checksum="0" * 32, progress=False)
    assert url in str(excinfo.value)
    assert list(dest.parent.iterdir()) == []


def test_download_rejects_unknown_scheme(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scheme"):
        download("ftp://example.invalid/x", tmp_path / "x", checksum="0" * 32, progress=False)


# --- tar extraction ---------------------------------------------------------------------------


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def make_tar(path: Path, build, mode: str = "w:gz") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as tar:
        build(tar)
    return path


def assert_nothing_left(dest: Path) -> None:
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # no temporary directory either


def test_safe_extract_good_archive(tmp_path: Path) -> None:
    def build(tar: tarfile.TarFile) -> None:
        add_file(tar, "top/a.txt", b"alpha")
        add_file(tar, "top/sub/b.txt", b"beta")

    archive = make_tar(tmp_path / "good.tar.gz", build)
    dest = tmp_path / "work" / "out"
    assert safe_extract_tar(archive, dest) == dest
    assert (dest / "top" / "a.txt").read_bytes() == b"alpha"
    assert (dest / "top" / "sub" / "b.txt").read_bytes() == b"beta"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out"]


def test_safe_extract_replaces_existing_dest(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "good.tar", lambda tar: add_file(tar, "new.txt", b"new"), mode="w")
    dest = tmp_path / "work" / "out"
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("old")
    safe_extract_tar(archive, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]


@pytest.mark.parametrize(
    ("member", "build"),
    [
        ("../evil.txt", lambda tar: (add_file(tar, "ok.txt", b"ok"), add_file(tar, "../evil.txt", b"evil"))),
        ("a/../../evil.txt", lambda tar: add_file(tar, "a/../../evil.txt", b"evil")),
        ("escape", lambda tar: add_link(tar, "escape", "../../outside")),
        # links are refused even when they point inside: the VOC and SBD archives hold none
        ("top/link", lambda tar: (add_file(tar, "top/a.txt", b"a"), add_link(tar, "top/link", "a.txt"))),
        ("top/hard", lambda tar: (add_file(tar, "top/a.txt", b"a"), add_link(tar, "top/hard", "top/a.txt",
                                                                              kind=tarfile.LNKTYPE))),
        ("abs_link", lambda tar: add_link(tar, "abs_link", "/etc/passwd")),
        ("hard", lambda tar: add_link(tar, "hard", "../outside", kind=tarfile.LNKTYPE)),
        ("dev", lambda tar: add_link(tar, "dev", "", kind=tarfile.CHRTYPE)),
        ("fifo", lambda tar: add_link(tar, "fifo", "", kind=tarfile.FIFOTYPE)),
    ],
)
def test_safe_extract_refuses_unsafe_member(tmp_path: Path, member: str, build) -> None:
    archive = make_tar(tmp_path / "bad" / "bad.tar.gz", build)
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(UnsafeArchiveError) as excinfo:
        safe_extract_tar(archive, dest)
    assert repr(member) in str(excinfo.value)
    assert str(archive) in str(excinfo.value)
    assert_nothing_left(dest)
    assert not (tmp_path / "work" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_refuses_absolute_member(tmp_path: Path) -> None:
    target = tmp_path / "abs_evil.txt"
    archive = make_tar(tmp_path / "bad" / "abs.tar.gz", lambda tar: add_file(tar, str(target), b"evil"))
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(UnsafeArchiveError, match="absolute") as excinfo:
        safe_extract_tar(archive, dest)
    assert str(target) in str(excinfo.value)
    assert not target.exists()
    assert_nothing_left(dest)


def extraction_dir_length(dest: Path) -> int:
    """Length of the temporary directory safe_extract_tar fills (atomic_dir: '.<name>.<8 random>.tmp' beside it)."""
    return len(str(dest.parent / f".{dest.name}.12345678.tmp"))


def cve_2025_4517_tar(tmp_path: Path, dest: Path) -> tuple[Path, str]:
    archive = tmp_path / "bad" / "chain.tar"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w") as tar:
        add_file(tar, "ok.txt", b"ok")
        escaped = add_path_max_chain(tar, extraction_dir_length(dest), "escape", b"gotcha")
    return archive, escaped


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_symlink())


def test_safe_extract_refuses_the_cve_2025_4517_link_chain(tmp_path: Path) -> None:
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    archive, _ = cve_2025_4517_tar(tmp_path, dest)
    with pytest.raises(UnsafeArchiveError) as excinfo:
        safe_extract_tar(archive, dest)
    # the chain's first link, refused by the member check before anything is written
    assert str(excinfo.value).startswith(f"unsafe member 'a' in archive {archive}: symbolic link to 'ddd")
    assert "the VOC and SBD archives contain none" in str(excinfo.value)
    assert_nothing_left(dest)
    assert files_under(tmp_path) == ["bad", "bad/chain.tar", "work"]


def test_destination_check_alone_stops_the_cve_2025_4517_link_chain(tmp_path: Path, monkeypatch) -> None:
    # The second line of defence: with links let through by name, the write through the chain is still refused
    # on the real filesystem, where tarfile's own "data" filter (Python 3.11.7) lets it out of the root.
    monkeypatch.setattr(download_module, "_check_member", lambda archive, member: None)
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    archive, escaped = cve_2025_4517_tar(tmp_path, dest)
    with pytest.raises(UnsafeArchiveError) as excinfo:
        safe_extract_tar(archive, dest)
    assert str(excinfo.value).startswith(f"unsafe member {escaped!r} in archive {archive}: its destination cannot "
                                         "be resolved (File name too long)")
    assert_nothing_left(dest)
    assert files_under(tmp_path) == ["bad", "bad/chain.tar", "work"]


def test_safe_extract_refuses_link_escaping_through_another_link(tmp_path: Path) -> None:
    # Each link target looks inside by name, but a/b/up resolves to the root, so a/b/up/.. is outside.
    def build(tar: tarfile.TarFile) -> None:
        add_file(tar, "a/b/keep.txt", b"x")
        add_link(tar, "a/b/up", "../..")
        add_link(tar, "out", "a/b/up/..")

    archive = make_tar(tmp_path / "bad" / "chain.tar.gz", build)
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(UnsafeArchiveError, match="'a/b/up'"):
        safe_extract_tar(archive, dest)
    assert_nothing_left(dest)


@pytest.mark.parametrize("mode", ["w:gz", "w"])
def test_safe_extract_truncated_archive(tmp_path: Path, mode: str) -> None:
    archive = make_tar(tmp_path / "bad" / "trunc.tar", lambda tar: add_file(tar, "big.bin", os.urandom(200_000)), mode)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    dest = tmp_path / "work" / "out"
    dest.parent.mkdir()
    with pytest.raises(tarfile.ReadError, match="trunc.tar"):
        safe_extract_tar(archive, dest)
    assert_nothing_left(dest)


def test_safe_extract_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        safe_extract_tar(tmp_path / "missing.tar", tmp_path / "out")
