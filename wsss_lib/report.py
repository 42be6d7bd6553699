"""Cross-method tables built from the per-method result files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from wsss_lib.atomic import atomic_path


def read_result(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"result file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"result file {path} is not valid JSON: {err}") from err


def cam_summary(methods: Sequence[str], result_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One row per method: CAM mIoU at the configured threshold, and the best threshold of the sweep."""
    if len(methods) != len(result_paths):
        raise ValueError(f"{len(methods)} methods but {len(result_paths)} result files")
    rows = []
    for method, path in zip(methods, result_paths):
        result = read_result(path)
        missing = [k for k in ("miou", "threshold", "best_miou", "best_threshold", "split", "n_images") if k not in result]
        if missing:
            raise ValueError(f"result file {path} lacks {missing}")
        rows.append({"method": method, "cam_miou": result["miou"], "threshold": result["threshold"],
                     "best_miou": result["best_miou"], "best_threshold": result["best_threshold"],
                     "split": result["split"], "n_images": result["n_images"]})
    return pd.DataFrame(rows)


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
