"""Configuration: per-method merging and provenance hashing.

The workflow config has four layers, each with one meaning:

- ``defaults``: reference hyper-parameters (IRN's CAM schedule, PSA's refinement, DeepLab-v2);
- ``protocols``: a source's training *schedule* (epochs, lr, split, batch, crop, checkpoint rule), e.g.
  mva-wsss's or SC-CAM's; a protocol may name a base protocol (``protocol:``) and hold only what differs from it
  (mva-wsss's FMix runs: ``mva_wsss_fmix`` and ``mva_wsss_fmix_v2`` over ``mva_wsss``);
- ``<dataset>.hparams``: the dataset's sizing (e.g. the CPU-sized synthetic demo), the same for every method;
- ``methods``: what a method *is* (mixing, loss terms and weights, sub-category settings), and the name of the
  protocol it follows.

A method's effective config is

    defaults <- protocols[<base>] <- protocols[<method>.protocol] <- <dataset>.hparams <- methods[<method>]

so a dataset's sizing wins over every protocol value it names, for every method. It is what reaches the method's
rules as ``params``, so editing one method's block reruns exactly that method's jobs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
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


def protocol_layers(protocols: Mapping[str, Any], name: str | None, named_by: str) -> dict[str, Mapping[str, Any]]:
    """``{"protocols.<name>": block}`` for protocol ``name`` and the base protocols it names (``protocol:``), base
    first, each block without its ``protocol`` key; {} for None. A KeyError names an unknown protocol and who named
    it; a ValueError a protocol that is its own base."""
    chain: list[str] = []
    while name is not None:
        if name not in protocols:
            raise KeyError(f"{named_by} follows protocol {name!r}, which config 'protocols' lacks; it has: "
                           f"{', '.join(sorted(protocols)) or 'none'}")
        if name in chain:
            raise ValueError(f"config protocols {' -> '.join([*chain, name])}: a protocol cannot be its own base")
        chain.append(name)
        named_by = f"protocol {name!r}"
        name = (protocols[name] or {}).get("protocol")
    return {f"protocols.{name}": {k: v for k, v in (protocols[name] or {}).items() if k != "protocol"}
            for name in reversed(chain)}


def method_config(config: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The effective hyper-parameters of ``method``: defaults <- its protocol (after the protocols it is based on)
    <- dataset hparams <- method block (the block's ``protocol`` key itself is kept, so the effective config says
    which schedule it follows)."""
    methods = config.get("methods", {})
    if method not in methods:
        raise KeyError(f"unknown method {method!r}; config 'methods' has: {', '.join(sorted(methods))}")
    block = methods[method] or {}
    protocols = config.get("protocols") or {}
    for name, layer in {"defaults": config["defaults"],
                        f"{config['dataset']}.hparams": config.get(config["dataset"], {}).get("hparams") or {}}.items():
        if "protocol" in layer:
            raise ValueError(f"config {name} sets 'protocol', which only a method block or a protocol may name")
    layers = {"defaults": config["defaults"], **protocol_layers(protocols, block.get("protocol"), f"method {method!r}"),
              f"{config['dataset']}.hparams": config.get(config["dataset"], {}).get("hparams") or {}}
    merged: dict[str, Any] = {}
    for layer in layers.values():
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


# [low, high] ranges in an hparams block (paths inside the block): each is drawn from inclusively, so low == high is
# a fixed value and low > high an error (torch.randint fails on it mid-training, naming no key).
HPARAM_RANGES = (("train_cam", "resize_long"), ("teacher", "resize_long"), ("refine", "affinity", "resize_long"),
                 ("segment", "scale_range"))
# eval_cams scores every sweep point in one confusion matrix per image: 101 is a 0.01 step over [0, 1], finer than
# any source reports CAM thresholds, and keeps the job's cost within a few times its single-threshold cost.
MAX_SWEEP_POINTS = 101


def sweep_points(start: float, stop: float, step: float) -> int:
    """How many thresholds eval_cams's sweep scores: start, start + step, ... up to stop inclusive
    (wsss_lib.stages.evaluate.threshold_grid, np.arange to stop + step / 2)."""
    return max(0, math.ceil((stop + step / 2 - start) / step))


def non_finite_values(node: Any, path: str = "") -> Iterable[tuple[str, float]]:
    """(dotted path, value) of each float NaN / +-inf under ``node`` (a config, a result); a list item's path is
    ``key[i]``."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from non_finite_values(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from non_finite_values(value, f"{path}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        yield path, node


def _dig(block: Mapping[str, Any] | None, keys: Iterable[str]) -> Any:
    for key in keys:
        if not isinstance(block, Mapping):
            return None
        block = block.get(key)
    return block


def _hparam_problems(block: Mapping[str, Any] | None) -> Iterable[tuple[str, Any, str]]:
    """(key inside the block, its value, what is expected) for each bad range or sweep of one hparams block."""
    for keys in HPARAM_RANGES:
        value = _dig(block, keys)
        if value is not None and value[0] > value[1]:
            yield ".".join(keys), value, "[low, high] with low <= high"
    sweep = _dig(block, ("eval_cams", "sweep"))
    if sweep is not None:
        start, stop, step = sweep  # the schema has checked step > 0
        if start > stop:
            yield "eval_cams.sweep", sweep, "[start, stop, step] with start <= stop (stop is the last threshold)"
        elif sweep_points(start, stop, step) > MAX_SWEEP_POINTS:
            yield ("eval_cams.sweep", sweep, f"at most {MAX_SWEEP_POINTS} thresholds, not "
                   f"{sweep_points(start, stop, step)} (a larger step)")


def check_config(config: Mapping[str, Any]) -> None:
    """What the JSON schema cannot say, checked after it (rules/common.smk), before any job runs: a ValueError
    naming every offending key by its dotted path, its value and what is expected.

    - no NaN or infinity anywhere: YAML's ``.nan`` / ``.inf`` are floats to jsonschema, and NaN passes every
      ``minimum`` / ``maximum`` (each comparison with it is false), so the schema lets them through;
    - ranges (HPARAM_RANGES) ordered, and the CAM threshold sweep ordered and of at most MAX_SWEEP_POINTS, in
      every layer where they can be written (so the error names the key the user wrote), then in each method's
      effective config (whatever layers method_config merges);
    - the synthetic train_aug split a superset of train.
    """
    problems = [f"config key {path} is {value}: expected a finite number" for path, value in non_finite_values(config)]
    if not problems:
        layers = {"defaults": config.get("defaults"),
                  **{f"protocols.{name}": block for name, block in (config.get("protocols") or {}).items()},
                  **{f"{dataset}.hparams": (config.get(dataset) or {}).get("hparams")
                     for dataset in ("synthetic", "voc12")},
                  **{f"methods.{name}": block for name, block in (config.get("methods") or {}).items()}}
        problems = [f"config key {name}.{key} is {value}: expected {expected}"
                    for name, block in layers.items() for key, value, expected in _hparam_problems(block)]
    if not problems:
        problems = [f"method {method}'s effective config (wsss_lib/config.py method_config) has {key} = {value}: "
                    f"expected {expected}"
                    for method in config.get("methods") or {}
                    for key, value, expected in _hparam_problems(method_config(config, method))]
    synthetic = config.get("synthetic") or {}
    if synthetic.get("n_train_aug", 0) < synthetic.get("n_train", 0):
        problems.append(f"config key synthetic.n_train_aug is {synthetic['n_train_aug']}: expected at least "
                        f"synthetic.n_train ({synthetic['n_train']}), as train_aug holds train")
    if problems:
        raise ValueError("invalid config:\n" + "\n".join(f"  {p}" for p in problems))


OVERRIDE_HINT = ("nested keys cannot be set with --config (Snakemake reads the numbers of a nested value as strings); "
                 "write them in a YAML file and add it with "
                 "--configfile config/config.yaml my_overrides.yaml (README: Overriding settings)")


def config_override_hint(error: Any, overrides: Mapping[str, Any]) -> str | None:
    """OVERRIDE_HINT when the schema's ``error`` (a jsonschema ValidationError) is in a value set with ``--config``
    (``overrides``, Snakemake's parsed --config) that is a nested one, or is an unknown top-level key set there
    (`--config 'train_cam={epochs: 2}'`); None otherwise (`--config device=gpu` gets the schema's error alone)."""
    path = list(error.absolute_path)
    if path:
        culprits = {path[0]} if isinstance(overrides.get(path[0]), Mapping) else set()
    elif error.validator == "additionalProperties":
        culprits = set(error.instance) - set(error.schema.get("properties", {}))
    else:
        culprits = set()
    return OVERRIDE_HINT if culprits & set(overrides) else None
