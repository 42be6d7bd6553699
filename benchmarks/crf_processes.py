"""crf pseudo-labels: one process vs a pool of workers (wsss_lib.crf.confident_labels_many).

Synthesises VOC-sized scenes (coloured ellipses on a textured background, CAMs = blurred blobs on
the ellipses, 1-3 classes each), writes them as JPEGs, and times PSA's confident-label step
(alphas 4 and 32, 10 CRF iterations) serially and with 2 workers, under the pool's default start
method and under the other one. All runs must give identical labels (checked before timing is
reported). Prints images/s of each run and the speed-ups.

    .venv/bin/python benchmarks/crf_processes.py
    .venv/bin/python benchmarks/crf_processes.py --images 8 --size 240x320
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

# Run as a script, sys.path[0] is benchmarks/; put the checkout first so this tree's wsss_lib is
# imported even where the venv's editable install points at another checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss_lib.crf import IGNORE, POOL_START_METHOD, CRFParams, CRFTask, confident_labels_many

LOW_ALPHA, HIGH_ALPHA = 4.0, 32.0  # PSA


def textured_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth colour gradient plus pixel noise, float (H, W, 3) in [0, 255]."""
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    base = rng.uniform(40, 160, 3) + 60 * np.sin(2 * np.pi * (rng.uniform(1, 4) * yy[..., None]
                                                              + rng.uniform(1, 4) * xx[..., None]
                                                              + rng.uniform(0, 1, 3)))
    return np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255)


def synthetic_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 (H, W, 3), cams float16 (k, H, W) in [0, 1], keys int16 (k,)), 1 <= k <= 3."""
    image = textured_background(rng, height, width)
    n_classes = int(rng.integers(1, 4))
    keys = np.sort(rng.choice(20, n_classes, replace=False)).astype(np.int16)
    yy, xx = np.mgrid[:height, :width]
    cams = np.empty((n_classes, height, width), dtype=np.float32)
    for c in range(n_classes):  # loop over at most 3 objects, not over pixels
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.1, 0.3) * height, rng.uniform(0.1, 0.3) * width
        radius = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)  # 1 on the ellipse's rim
        inside = radius <= 1
        image[inside] = rng.uniform(0, 255, 3) + rng.normal(0, 8, (inside.sum(), 3))
        # A CAM is a blurred, slightly off-centre version of the object: peaks inside, fades past the rim.
        shifted = np.sqrt(((yy - cy - 0.2 * ry) / (0.8 * ry)) ** 2 + ((xx - cx) / (0.8 * rx)) ** 2)
        cams[c] = np.exp(-0.5 * shifted**2)
    cams /= cams.reshape(n_classes, -1).max(axis=1)[:, None, None]
    return np.clip(image, 0, 255).astype(np.uint8), cams.astype(np.float16), keys


def write_tasks(directory: Path, n_images: int, height: int, width: int, seed: int = 0) -> list[CRFTask]:
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(n_images):
        image, cams, keys = synthetic_scene(rng, height, width)
        path = directory / f"synthetic_{i:04d}.jpg"
        Image.fromarray(image).save(path, quality=90)
        tasks.append(CRFTask(path.stem, str(path), cams, keys))
    return tasks


def timed_run(tasks: list[CRFTask], processes: int, start_method: str) -> tuple[float, list[tuple[str, np.ndarray]]]:
    start = time.perf_counter()
    results = list(confident_labels_many(tasks, LOW_ALPHA, HIGH_ALPHA, CRFParams(), processes=processes,
                                         start_method=start_method))
    return time.perf_counter() - start, results


def same_results(a: list[tuple[str, np.ndarray]], b: list[tuple[str, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(ia == ib and np.array_equal(la, lb) for (ia, la), (ib, lb) in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", default="375x500", help="HEIGHTxWIDTH (VOC: 375x500)")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    other_method = "spawn" if POOL_START_METHOD == "fork" else "fork"

    print(f"os.cpu_count() = {os.cpu_count()}; load average (1, 5, 15 min) = "
          f"{tuple(round(v, 2) for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as work:
        tasks = write_tasks(Path(work), args.images, height, width)
        n_classes = [len(task.keys) for task in tasks]
        print(f"{args.images} images {height}x{width}, {sum(n_classes)} objects "
              f"({min(n_classes)}-{max(n_classes)} per image); alphas {LOW_ALPHA:g}/{HIGH_ALPHA:g}, "
              f"{CRFParams().iterations} CRF iterations")

        runs = [("processes=1", 1, POOL_START_METHOD),
                (f"processes={args.processes} ({POOL_START_METHOD}, default)", args.processes, POOL_START_METHOD),
                (f"processes={args.processes} ({other_method})", args.processes, other_method)]
        timings = {}
        reference = None
        for name, processes, method in runs:
            seconds, results = timed_run(tasks, processes, method)
            if reference is None:
                reference = results
            elif not same_results(reference, results):
                raise SystemExit(f"{name}: labels differ from the serial run")
            timings[name] = seconds

    print("all runs give identical labels")
    serial = timings["processes=1"]
    for name, seconds in timings.items():
        print(f"{name:<32} {seconds:7.2f} s  {args.images / seconds:6.2f} images/s  speed-up {serial / seconds:4.2f}x")
    background = np.mean([np.mean(labels == 0) for _, labels in reference])
    ignored = np.mean([np.mean(labels == IGNORE) for _, labels in reference])
    print(f"label shares (mean over images): background {background:.2f}, ignore {ignored:.2f}, "
          f"foreground {1 - background - ignored:.2f}")


if __name__ == "__main__":
    main()
