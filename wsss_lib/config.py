"""Configuration: per-method merging and provenance hashing.

The workflow config has ``defaults`` (reference hyper-parameters), ``protocols`` (named training
schedules as a source publishes them, e.g. mva-wsss's or SC-CAM's), a per-dataset ``hparams`` block
(e.g. the CPU-sized synthetic demo) and ``methods`` (overrides only; ``protocol`` names the schedule
a method follows). A method's effective config is

    defaults <- protocols[<method>.protocol] <- <dataset>.hparams <- methods[<method>]

so a dataset's sizing (epochs, crop, batch, lr for its backbone) overrides a protocol's VOC values,
and what is specific to one method wins over both. It is what reaches the method's rules as
``params``, so editing one method's block reruns exactly that method's jobs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """A new dict: ``base`` updated recursively by ``override`` (mappings merge, other values replace)."""
    merged = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def method_config(config: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The effective hyper-parameters of ``method``: defaults <- its protocol <- dataset hparams <- method block
    (the block's ``protocol`` key itself is kept, so the effective config says which schedule it follows)."""
    methods = config.get("methods", {})
    if method not in methods:
        raise KeyError(f"unknown method {method!r}; config 'methods' has: {', '.join(sorted(methods))}")
    block = methods[method] or {}
    protocols = config.get("protocols") or {}
    protocol = block.get("protocol")
    if protocol is not None and protocol not in protocols:
        raise KeyError(f"method {method!r} follows protocol {protocol!r}, which config 'protocols' lacks; it has: "
                       f"{', '.join(sorted(protocols)) or 'none'}")
    layers = {"defaults": config["defaults"], f"protocols.{protocol}": protocols.get(protocol) or {},
              f"{config['dataset']}.hparams": config.get(config["dataset"], {}).get("hparams") or {}}
    merged: dict[str, Any] = {}
    for name, layer in layers.items():
        if "protocol" in layer:
            raise ValueError(f"config {name} sets 'protocol', which only a method block may name")
        merged = deep_merge(merged, layer)
    return deep_merge(merged, block)


def config_hash(value: Any) -> str:
    """A short stable hash of a JSON-serialisable value (for provenance attributes)."""
    blob = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def job_fingerprint(params: Mapping[str, Any], inputs: Iterable[str | os.PathLike]) -> str:
    """Identity of a Snakemake job for its training resume state: :func:`config_hash` of its params
    (every one, the rule's ``code`` hash included) and of its inputs as they are on disk now.

    An input counts by (path, size, mtime_ns), a directory by those of every file under it: a
    rewritten input gets a new mtime, which is all it takes to tell it apart, and stat-ing even the
    ~10,000 pseudo-label PNGs of VOC train_aug costs far less than hashing their contents.
    """
    def identity(path: Path) -> list:
        stat = path.stat()
        return [str(path), stat.st_size, stat.st_mtime_ns]

    files = []
    for name in sorted({str(p) for p in inputs}):
        path = Path(name)
        if path.is_dir():
            files.extend(identity(f) for f in sorted(path.rglob("*")) if f.is_file())
        else:
            files.append(identity(path))
    return config_hash({"params": dict(params), "inputs": files})
