"""The one way to build, save and load a network of the pipeline.

A model file is ``{"state_dict", "meta"}`` (see :mod:`wsss_lib.models.checkpoint`); ``meta`` holds
``architecture`` (a key of :data:`ARCHITECTURES`), ``build_args`` (the builder's keyword arguments, plain values)
and whatever provenance the writer adds (class_names, method, config_hash, input_mean/std, ...). Loading rebuilds
``ARCHITECTURES[architecture](**build_args, pretrained="none")`` (nothing downloaded or read besides the file) and
loads the weights; a file naming an unknown or another architecture, or build arguments its builder refuses, is
refused with the file's name.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable

from torch import nn

from wsss_lib.models.checkpoint import load_weights, read_checkpoint, save_checkpoint

# architecture -> (module, builder, its name in messages); imported on use: the ViT's module imports torchvision
# (~2 s a process)
ARCHITECTURES: dict[str, tuple[str, str, str]] = {
    "cam_net": ("wsss_lib.models.cam_net", "build_cam_net", "CAM model"),
    "affinity_net": ("wsss_lib.models.affinity_net", "build_affinity_net", "AffinityNet model"),
    "deeplab": ("wsss_lib.models.deeplab", "build_deeplab", "DeepLab model"),
    "vit": ("wsss_lib.models.vit", "build_vit", "ViT model"),
}


def builder(architecture: str) -> Callable[..., nn.Module]:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {', '.join(ARCHITECTURES)}")
    module, name, _ = ARCHITECTURES[architecture]
    return getattr(importlib.import_module(module), name)


def check_plain(value: Any, where: str) -> None:
    """Reject what ``torch.load(weights_only=True)`` would refuse, at save time rather than at load time."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"model metadata {where} has a key of type {type(key).__name__}; use str")
            check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"model metadata {where} is a {type(value).__name__}; only plain types "
                    f"(None, bool, int, float, str, list, tuple, dict) can be read with weights_only=True")


def rebuild(architecture: str, build_args: dict, path: str | os.PathLike) -> nn.Module:
    """``ARCHITECTURES[architecture](**build_args, pretrained="none")``; a refusal names ``path``."""
    build = builder(architecture)
    if "pretrained" in build_args or "weights_file" in build_args:
        raise ValueError(f"model file {path}: build_args name pretrained weights; the file holds every weight")
    try:
        return build(**build_args, pretrained="none")
    except (TypeError, ValueError) as err:
        raise ValueError(f"model file {path}: {architecture} cannot be built from {build_args}: {err}") from err


def save_network(path: str | os.PathLike, model: nn.Module, *, architecture: str, build_args: dict, **meta) -> None:
    """Write ``model``'s weights with ``meta`` plus its ``architecture`` and ``build_args`` atomically.

    The network that :func:`load_network` would rebuild is built here and must be ``model``'s structure (the same
    modules, the same tensors), so a file never describes a network other than the one it holds.
    """
    full = {**meta, "architecture": architecture, "build_args": dict(build_args)}
    check_plain(full, "meta")
    rebuilt = rebuild(architecture, full["build_args"], path)
    if repr(rebuilt) != repr(model):
        raise ValueError(f"model for {path} is not the {architecture} that {build_args} builds")
    state_dict = model.state_dict()
    load_weights(rebuilt, state_dict, path, ARCHITECTURES[architecture][2])
    save_checkpoint(path, state_dict, full)


def load_network(path: str | os.PathLike, architecture: str | None = None) -> tuple[nn.Module, dict]:
    """(model, meta) of a file written by :func:`save_network`; with ``architecture``, another one is refused."""
    what = ARCHITECTURES[architecture][2] if architecture in ARCHITECTURES else "model file"
    state_dict, meta = read_checkpoint(path, what, architecture)
    found, build_args = meta.get("architecture"), meta.get("build_args")
    if found not in ARCHITECTURES or not isinstance(build_args, dict):
        raise ValueError(f"{what} {path} names architecture {found!r} and build_args {build_args!r}: not a model "
                         f"file written by save_network (architectures: {', '.join(ARCHITECTURES)})")
    model = rebuild(found, build_args, path)
    load_weights(model, state_dict, path, what)
    return model, meta
