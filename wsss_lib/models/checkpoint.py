"""Model files: ``{"state_dict": ..., "meta": {...}}`` written atomically, read without unpickling code.

Every trained network of the chain (CAM nets, ViT teacher, AffinityNet, DeepLab) is stored this way, through
:func:`wsss_lib.models.registry.save_network` / ``load_network``; ``meta`` holds plain values only, so
``torch.load(weights_only=True)`` can read it.
"""

from __future__ import annotations

import errno
import os
import pickle
import stat
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsss_lib.atomic import atomic_path

# Largest file any reader here accepts. The largest networks the pipeline saves are ResNet-38 (~420 MB of float32
# weights) and ViT-B/16 (~350 MB); a resume state adds the optimizer's momentum and the best epoch's weights (about
# 3x the network, ~1.3 GB for ResNet-38). 2 GiB leaves room for those and refuses a file that could exhaust memory.
MAX_MODEL_FILE_BYTES = 2 << 30
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6; torch.load tells it from the legacy one by this


def save_torch_file(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically; an I/O error (a full disk: ENOSPC) names ``path`` and its cause."""
    path = Path(path)
    with atomic_path(path, suffix=".pt") as tmp:
        try:
            # Into a file object of ours rather than to a path: torch then writes through Python's io, so a full disk
            # raises OSError(ENOSPC); its own file writer reports only "unexpected pos N vs M" (no errno, no file).
            # Unlike serialising to memory first, this holds no second copy of the (up to ~1.3 GB) bytes.
            with open(tmp, "wb") as f:
                torch.save(obj, f)
        except (OSError, RuntimeError) as err:
            # torch's writer may meet the failed write again while closing the zip and raise its RuntimeError
            # instead, with the OSError as its context
            cause = err
            while cause is not None and not (isinstance(cause, OSError) and cause.errno):
                cause = cause.__context__
            if cause is None:
                raise
            name = errno.errorcode.get(cause.errno, f"errno {cause.errno}")
            advice = "; free space on its filesystem and rerun" if cause.errno == errno.ENOSPC else ""
            raise OSError(cause.errno, f"cannot write {path}: {os.strerror(cause.errno)} ({name}){advice}") from err


def save_checkpoint(path: str | os.PathLike, state_dict: dict, meta: dict) -> None:
    save_torch_file(path, {"state_dict": state_dict, "meta": meta})


def load_torch_file(path: str | os.PathLike, what: str) -> Any:
    """The object that torch.save wrote to ``path``: the one reader of model, weights and resume-state files.

    Before torch sees the file it must be a regular file of at most :data:`MAX_MODEL_FILE_BYTES`, and, in the
    zip format, have only uncompressed records whose sizes fit in the file: torch.save compresses nothing, so
    this refuses a zip bomb before a byte is inflated. Then torch's weights-only unpickler reads it, which
    never runs code from the file. Errors name ``what`` and ``path``: FileNotFoundError for a missing file,
    ValueError for anything else.
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ValueError(f"{what} {path} is a directory, not a model file") from None
    with f:  # checked and read through one descriptor, so the file checked is the file read
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{what} {path} is not a regular file (a device or pipe?); give a model file")
        if info.st_size > MAX_MODEL_FILE_BYTES:
            raise ValueError(f"{what} {path} is {info.st_size} bytes, more than the {MAX_MODEL_FILE_BYTES} a model "
                             f"file of this pipeline can be (MAX_MODEL_FILE_BYTES); it was not read")
        if f.read(len(ZIP_MAGIC)) == ZIP_MAGIC:
            _check_zip_records(f, path, what, info.st_size)
        f.seek(0)
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            # torch's own text advises retrying with weights_only=False, i.e. running the file's code: keep only
            # what it met, so the user is not told to unpickle a file of unknown origin
            raise ValueError(f"cannot load {what} {path}: not a model file of this pipeline (torch's weights-only "
                             f"reader, which never runs a file's code, refused it: {weights_only_reason(err)})"
                             ) from None
        except Exception as err:  # torch raises several types (KeyError, RuntimeError, ...) for corrupt files
            raise ValueError(f"cannot load {what} {path}: not a model file of this pipeline "
                             f"({type(err).__name__}: {err})") from err


def _check_zip_records(f, path: Path, what: str, size: int) -> None:
    """Refuse a zip-format file that torch.save cannot have written, reading only its directory."""
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as err:
        raise ValueError(f"cannot load {what} {path}: not a model file of this pipeline (corrupt zip: {err})") from None
    compressed = [r for r in records if r.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise ValueError(f"cannot load {what} {path}: its record {compressed[0].filename!r} is compressed (zip "
                         f"method {compressed[0].compress_type}), which torch.save never does; refused before "
                         f"inflating anything (a zip bomb?)")
    declared = sum(r.file_size for r in records)
    if declared > size:
        raise ValueError(f"cannot load {what} {path}: its records declare {declared} bytes in a {size}-byte file, "
                         f"which torch.save never writes; refused before reading them (a zip bomb?)")


def read_checkpoint(path: str | os.PathLike, what: str, architecture: str | None = None) -> tuple[dict, dict]:
    """(state_dict, meta) of a file written by :func:`save_checkpoint`; errors name ``path``.

    ``what`` names the kind of model in messages; with ``architecture``, a file whose
    ``meta["architecture"]`` differs (another kind of model) is refused.
    """
    blob = load_torch_file(path, what)
    meta = blob.get("meta") if isinstance(blob, dict) else None
    if not isinstance(meta, dict) or "state_dict" not in blob:
        raise ValueError(f"{path} holds no {what}: it lacks 'state_dict'/'meta'")
    if architecture is not None and meta.get("architecture") != architecture:
        raise ValueError(f"{path} holds no {what} (architecture: {meta.get('architecture')!r})")
    return blob["state_dict"], meta


def load_weights(model: nn.Module, state_dict: Any, path: str | os.PathLike, what: str, strict: bool = True):
    """``model.load_state_dict(state_dict, strict)`` for weights read from ``path``; load_state_dict's result.

    A file whose tensors do not fit ``model`` (wrong shapes; with ``strict``, missing or unexpected keys) raises
    ValueError naming ``path`` and the first mismatches, not torch's message about the model class alone.
    """
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise ValueError(f"{what} {path}: its state_dict is not a dict of tensors")
    own = model.state_dict()
    problems = [f"{key}: file {tuple(state_dict[key].shape)} vs network {tuple(own[key].shape)}"
                for key in own if key in state_dict and state_dict[key].shape != own[key].shape]
    problems = [f"shape of {', '.join(problems[:3])}"] if problems else []
    if strict:
        missing, unexpected = [k for k in own if k not in state_dict], [k for k in state_dict if k not in own]
        problems += [f"missing {missing[:3]}"] if missing else []
        problems += [f"unexpected {unexpected[:3]}"] if unexpected else []
    if problems:
        raise ValueError(f"{what} {path} does not fit its network: {'; '.join(problems)}")
    try:
        return model.load_state_dict(state_dict, strict=strict)
    except RuntimeError as err:  # anything the checks above did not foresee
        raise ValueError(f"{what} {path} does not fit its network: {err}") from err


TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def weights_only_reason(err: Exception) -> str:
    """The line of torch's weights-only refusal that says what it met (e.g. 'Trying to load unsupported
    GLOBAL posix.system ...'), without the surrounding advice."""
    lines = [line.strip() for line in str(err).splitlines()]
    found = [line for line in lines if line and not line.startswith(TORCH_BOILERPLATE)]
    return " ".join(found) or (lines[0] if lines else type(err).__name__)
