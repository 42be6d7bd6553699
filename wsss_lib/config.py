"""Configuration: per-method merging and provenance hashing.

The workflow config has ``defaults`` (reference hyper-parameters), a per-dataset ``hparams`` block
(e.g. the CPU-sized synthetic demo) and ``methods`` (overrides only). A method's effective
config is ``defaults <- <dataset>.hparams <- methods[<method>]``; it is what reaches the method's
rules as ``params``, so editing one method's block reruns exactly that method's jobs.
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
    """The effective hyper-parameters of ``method``: defaults <- dataset hparams <- method block."""
    methods = config.get("methods", {})
    if method not in methods:
        raise KeyError(f"unknown method {method!r}; config 'methods' has: {', '.join(sorted(methods))}")
    dataset = config["dataset"]
    merged = deep_merge(config["defaults"], config.get(dataset, {}).get("hparams", {}))
    return deep_merge(merged, methods[method] or {})


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
