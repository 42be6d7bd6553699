"""Model files: ``{"state_dict": ..., "meta": {...}}`` written atomically, read without unpickling code.

Every trained network of the chain (CAM net, AffinityNet, DeepLab) is stored this way; ``meta`` holds
plain values only, so ``torch.load(weights_only=True)`` can read it.
"""

from __future__ import annotations

import os
import pickle

import torch

from wsss_lib.atomic import atomic_path


def save_checkpoint(path: str | os.PathLike, state_dict: dict, meta: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"state_dict": state_dict, "meta": meta}, tmp)


def read_checkpoint(path: str | os.PathLike, what: str, architecture: str | None = None) -> tuple[dict, dict]:
    """(state_dict, meta) of a file written by :func:`save_checkpoint`; errors name ``path``.

    ``what`` names the kind of model in messages; with ``architecture``, a file whose
    ``meta["architecture"]`` differs (another kind of model) is refused.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except pickle.UnpicklingError as err:
        # torch's own text advises retrying with weights_only=False, i.e. running the file's code: keep only
        # what it met, so the user is not told to unpickle a file of unknown origin
        raise ValueError(f"cannot load {what} {path}: not a model file of this pipeline (torch's weights-only "
                         f"reader, which never runs a file's code, refused it: {weights_only_reason(err)})") from None
    except Exception as err:  # torch raises several types (KeyError, RuntimeError, ...) for corrupt files
        raise ValueError(f"cannot load {what} {path}: not a model file of this pipeline "
                         f"({type(err).__name__}: {err})") from err
    meta = blob.get("meta") if isinstance(blob, dict) else None
    if not isinstance(meta, dict) or "state_dict" not in blob:
        raise ValueError(f"{path} holds no {what}: it lacks 'state_dict'/'meta'")
    if architecture is not None and meta.get("architecture") != architecture:
        raise ValueError(f"{path} holds no {what} (architecture: {meta.get('architecture')!r})")
    return blob["state_dict"], meta


TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def weights_only_reason(err: Exception) -> str:
    """The line of torch's weights-only refusal that says what it met (e.g. 'Trying to load unsupported
    GLOBAL posix.system ...'), without the surrounding advice."""
    lines = [line.strip() for line in str(err).splitlines()]
    found = [line for line in lines if line and not line.startswith(TORCH_BOILERPLATE)]
    return " ".join(found) or (lines[0] if lines else type(err).__name__)
