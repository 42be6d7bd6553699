"""Model files: ``{"state_dict": ..., "meta": {...}}`` written atomically, read without unpickling code.

Every trained network of the chain (CAM net, AffinityNet, DeepLab) is stored this way; ``meta`` holds
plain values only, so ``torch.load(weights_only=True)`` can read it.
"""

from __future__ import annotations

import os

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
    except Exception as err:  # torch raises several types for corrupt or pickled files
        raise ValueError(f"cannot load {what} {path}: {err}") from err
    meta = blob.get("meta") if isinstance(blob, dict) else None
    if not isinstance(meta, dict) or "state_dict" not in blob:
        raise ValueError(f"{path} holds no {what}: it lacks 'state_dict'/'meta'")
    if architecture is not None and meta.get("architecture") != architecture:
        raise ValueError(f"{path} holds no {what} (architecture: {meta.get('architecture')!r})")
    return blob["state_dict"], meta
