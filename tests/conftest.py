"""Shared fixtures: repository paths, the real VOC sample, and run_snakemake (the overlays tests pass it are in
overlays.py)."""

from __future__ import annotations

import io
import os
import posixpath
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VOC_SAMPLE = REPO.parent / "shared" / "voc_sample"


@pytest.fixture(scope="session")
def voc_sample() -> Path:
    if not (VOC_SAMPLE / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"real VOC sample not found at {VOC_SAMPLE}")
    return VOC_SAMPLE


def saved_cam_net(tmp_path: Path, backbone: str = "small_cnn_w16"):
    """A seeded 2-class CAM net saved as a model file (tmp_path/cam.pt): the net and its path."""
    import torch

    from wsss_lib.models.cam_net import build_cam_net
    from wsss_lib.models.registry import save_network

    torch.manual_seed(0)
    build_args = {"backbone": backbone, "n_classes": 2, "output_stride": 8}
    net = build_cam_net(**build_args)
    path = tmp_path / "cam.pt"
    save_network(path, net, architecture="cam_net", build_args=build_args, class_names=["a", "b"])
    return net, path


def write_overlay(workdir: Path, overlay: dict, name: str = "overlay.yaml") -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump(overlay))
    return path


def run_snakemake(workdir: Path, *args: str, overlay: dict | None = None, check: bool = True,
                  env: dict | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run the real workflow with the repository's Snakefile and config, outputs under ``workdir``.

    ``overlay`` is merged over config/config.yaml (as a second --configfile); ``env`` adds to the environment;
    past ``timeout`` seconds subprocess.TimeoutExpired is raised.
    """
    configfiles = [str(REPO / "config" / "config.yaml")]
    if overlay is not None:
        configfiles.append(str(write_overlay(workdir, overlay)))
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(workdir), "--configfile", *configfiles, *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-4000:]}")
    return result


class RunsCodeWhenUnpickled:
    """A pickle that makes the directory ``marker`` if anything unpickles it: model-file tests check it never runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def png_claiming(path: Path, width: int, height: int) -> None:
    """A complete, valid 1-bit greyscale PNG of width x height, all black: a few kB on disk whatever it claims."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    block = row * 1000
    data = b"".join(compressor.compress(block) for _ in range(height // 1000))
    data += compressor.compress(row * (height % 1000)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def add_path_max_chain(tar, extraction_dir_length: int, escape: str, payload: bytes, up: int = 1) -> str:
    """Add CVE-2025-4517's link chain to the open ``tar``, then a member written through it to ``escape``/name.

    16 nested directories of one long name, a one-letter symlink to each, then a link of sixteen ``..`` placed
    under the 16 one-letter links: by name it points at the extraction root, but resolved through the long
    names its path passes PATH_MAX, where non-strict realpath (tarfile's "data" filter on Python < 3.11.13) stops
    resolving and calls it inside. ``escape`` links to it plus ``up`` ``..``: ``up`` levels above the extraction
    directory (whose path length the component length is computed from, as CPython's test does). Returns the
    name of the member written outside.
    """
    steps = "abcdefghijklmnop"
    path_max = os.pathconf("/", "PC_PATH_MAX")
    component = "d" * ((path_max - extraction_dir_length - 1) // (len(steps) + 1))
    path = ""
    for step in steps:
        info = tarfile.TarInfo(posixpath.join(path, component))
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        link = tarfile.TarInfo(posixpath.join(path, step))
        link.type, link.linkname = tarfile.SYMTYPE, component
        tar.addfile(link)
        path = posixpath.join(path, component)
    long_link = tarfile.TarInfo(posixpath.join(*steps, "l" * 254))
    long_link.type, long_link.linkname = tarfile.SYMTYPE, posixpath.join(*[".."] * len(steps))
    tar.addfile(long_link)
    link = tarfile.TarInfo(escape)
    link.type, link.linkname = tarfile.SYMTYPE, posixpath.join(long_link.name, *[".."] * up)
    tar.addfile(link)
    name = f"{escape}/escaped.txt"
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))
    return name


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Selenium. Debian's chromium and chromium-driver are installed here when
    missing (the one test-setup step that needs the network); Selenium is pointed at them, so it never fetches
    a driver of its own."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if shutil.which("apt-get") is None:
            pytest.skip("no Chromium and no apt-get to install Debian's chromium with")
        apt = ["apt-get"] if os.geteuid() == 0 else ["sudo", "-n", "apt-get"]
        install = [*apt, "install", "-y", "-q", "chromium", "chromium-driver"]
        installed = subprocess.run(install, capture_output=True, text=True)
        if installed.returncode != 0:  # a fresh machine's package lists may be missing or stale
            subprocess.run([*apt, "update", "-q"], capture_output=True, text=True)
            installed = subprocess.run(install, capture_output=True, text=True)
        assert installed.returncode == 0, f"installing chromium failed:\n{installed.stdout}\n{installed.stderr}"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1600,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
