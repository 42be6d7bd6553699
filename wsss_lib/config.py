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
from typing import Any, Mapping


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
