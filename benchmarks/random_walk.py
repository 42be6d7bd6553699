"""Random walk (PSA, Ahn & Kwak CVPR 2018, Sec. 3.5): sparse (D^-1 A)^n vs PSA's dense squared matrix.

A deterministic embedding-like affinity field (a few objects on a background, pooled to the
affinity stride) and CAMs for 20 foreground classes (3 present, as PSA propagates all 21 VOC
channels) go through four label pipelines:

  sparse     wsss_lib.random_walk.random_walk_labels (CSR transition, 2^exp_times sparse steps, float32,
             steps on 1 thread: the library default)
  sparse_mt  the same with the steps on --threads threads
  dense      the reference dense_random_walk (Python-loop fill, exp_times squarings, float64)
  dense32    PSA's infer_aff.py as PSA runs it: vectorised dense fill, float32 squarings

Walked scores and labels of sparse and dense are checked equal first. Times (the walk alone, and the
whole label pipeline) are medians over --repeats; peak memory of both is measured in a fresh
subprocess per variant that loads the inputs from a file: the peak RSS (VmHWM) during one call,
reset through /proc/self/clear_refs just before, minus the RSS right before it, after a tiny warm-up
so lazily loaded kernels do not count. The sparse walk also runs at --fine-stride (4); dense variants are
skipped where their matrices would need more than --max-dense-gb or their squarings more than
--max-dense-tflop.

    .venv/bin/python benchmarks/random_walk.py [--size 375x500] [--stride 8] [--classes 21]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

# The venv's editable install may point at another checkout: import this one's wsss_lib.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsss_lib.affinity import neighbour_offsets, pair_affinities, valid_pairs  # noqa: E402
from wsss_lib.random_walk import (dense_random_walk, labels_from_scores, pair_indices, pooled_scores,  # noqa: E402
                                  random_walk, random_walk_labels)

PRESENT = (14, 11, 4)  # 0-based VOC foreground ids of the objects in the scene (person, dog, boat)


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def scene(size: tuple[int, int], seed: int) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """(H, W) region ids (0 background, 1.. objects) of axis-aligned ellipses, one per vertical band
    of the image so they do not overlap, and the ellipses (cy, cx, ry, rx)."""
    height, width = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    regions = np.zeros(size, np.int64)
    ellipses = []
    band = width / len(PRESENT)
    for index in range(len(PRESENT)):
        ry, rx = rng.uniform(0.2, 0.35) * height, rng.uniform(0.3, 0.45) * band
        cy, cx = rng.uniform(ry, height - ry), (index + 0.5) * band + rng.uniform(-0.05, 0.05) * band
        regions[((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1] = index + 1
        ellipses.append((cy, cx, ry, rx))
    return regions, ellipses


def embedding_affinities(regions: np.ndarray, stride: int, offsets, seed: int) -> torch.Tensor:
    """Affinities of an embedding that is constant per region plus smooth drift and noise, average-
    pooled to the stride (mixed cells on boundaries), as AffinityNet's exp(-mean |f_i - f_j|)."""
    rng = np.random.default_rng(seed + 1)
    height, width = regions.shape
    channels = 16
    codes = rng.normal(0, 2, (regions.max() + 1, channels))  # regions ~1.5-2.5 apart: a^8 ~ 1e-6 across
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    drift = 0.3 * np.sin(2 * np.pi * (ys[..., None] * rng.uniform(0.5, 2, channels)
                                      + xs[..., None] * rng.uniform(0.5, 2, channels)))
    features = torch.from_numpy((codes[regions] + drift).transpose(2, 0, 1)).float()
    map_size = (math.ceil(height / stride), math.ceil(width / stride))
    padded = torch.nn.functional.pad(features, (0, map_size[1] * stride - width, 0, map_size[0] * stride - height),
                                     mode="replicate")
    pooled = torch.nn.functional.avg_pool2d(padded, stride, stride)
    pooled = pooled + 0.05 * torch.from_numpy(rng.normal(0, 1, pooled.shape)).float()
    return pair_affinities(pooled[None], offsets)[0]


def scene_cams(regions: np.ndarray, ellipses, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes - 1, H, W) CAMs in [0, 1]: a peaked bump on each present object, shifted off-centre
    and narrower than the object (CAMs find the discriminative part), zero for absent classes."""
    height, width = regions.shape
    keys = np.arange(classes - 1)
    cams = np.zeros((classes - 1, height, width), np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    for (cy, cx, ry, rx), key in zip(ellipses, PRESENT):
        if key >= classes - 1:
            continue
        bump = np.exp(-(((ys - cy + 0.25 * ry) / (0.6 * ry)) ** 2 + ((xs - cx) / (0.6 * rx)) ** 2))
        cams[key] = np.maximum(cams[key], bump)
    return cams, keys


def make_inputs(args: argparse.Namespace, stride: int) -> tuple[tuple, np.ndarray]:
    """((cams, keys, affinities, offsets), region ids) for one stride."""
    regions, ellipses = scene(args.size, args.seed)
    offsets = neighbour_offsets(args.radius)
    affinities = embedding_affinities(regions, stride, offsets, args.seed).to(args.device)
    cams, keys = scene_cams(regions, ellipses, args.classes)
    return (cams, keys, affinities, offsets), regions


def psa_dense_walk(scores: torch.Tensor, affinities: torch.Tensor, offsets, beta: float,
                   exp_times: int) -> torch.Tensor:
    """PSA's dense walk as infer_aff.py runs it: vectorised fill, column-normalised, float32 squarings."""
    channels, height, width = scores.shape
    entry, first, second = pair_indices(height, width, offsets, affinities.device)
    weight = affinities.reshape(-1)[entry] ** beta
    matrix = torch.eye(height * width, dtype=affinities.dtype, device=affinities.device)
    matrix[first, second] = weight
    matrix[second, first] = weight
    transition = matrix / matrix.sum(0, keepdim=True)
    del matrix
    for _ in range(exp_times):
        transition = transition @ transition
    return (scores.reshape(channels, -1).to(transition) @ transition).reshape(channels, height, width)


def multithreaded_walk(scores: torch.Tensor, affinities: torch.Tensor, offsets, beta: float, exp_times: int):
    """The sparse walk with its steps on torch's thread setting (--threads) instead of one thread."""
    return random_walk(scores, affinities, offsets, beta, exp_times, cpu_threads=None)


WALKS = {"sparse": random_walk, "sparse_mt": multithreaded_walk, "dense": dense_random_walk,
         "dense32": psa_dense_walk}


def scores_of(inputs, stride: int, args) -> torch.Tensor:
    cams, _, affinities, _ = inputs
    return pooled_scores(cams, tuple(affinities.shape[-2:]), stride, args.alpha, affinities.device, affinities.dtype)


def walk_with(variant: str, scores: torch.Tensor, inputs, args) -> torch.Tensor:
    _, _, affinities, offsets = inputs
    return WALKS[variant](scores, affinities, offsets, args.beta, args.exp_times)


def labels_with(variant: str, inputs, stride: int, args) -> np.ndarray:
    """Full label pipeline: the library's random_walk_labels for sparse, the same steps around the other walks."""
    cams, keys, affinities, offsets = inputs
    if variant == "sparse":
        return random_walk_labels(cams, keys, affinities, offsets, stride, args.alpha, args.beta, args.exp_times)
    walked = walk_with(variant, scores_of(inputs, stride, args), inputs, args)
    return labels_from_scores(walked, cams.shape[-2:], stride, keys)


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(call: Callable[[], object], repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        synchronise(device)
        start = time.perf_counter()
        call()
        synchronise(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def memory_status_kb() -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of this process, in kB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_during(call: Callable[[], object], device: str) -> tuple[float, bool]:
    """(MB the peak RSS rose above the RSS right before ``call``, whether that is only an upper bound).

    Importing torch alone peaks at ~0.5 GB and the kernel may later reclaim clean library pages, so the
    lifetime peak says nothing about the call: it is reset first. ru_maxrss is not used: it also keeps
    the peak of exited threads (torch's pool when the thread count changes), which the reset does not
    clear."""
    reset = reset_peak_rss()
    before = memory_status_kb()
    call()
    synchronise(device)
    after = memory_status_kb()
    return (after["VmHWM"] - before["VmRSS"]) / 1024, not reset or before["VmHWM"] > before["VmRSS"]


def measure_memory(args: argparse.Namespace) -> None:
    """--only mode, in a fresh process: the walk alone or one full label pipeline (--what) of one variant
    on inputs saved by the parent. One call per process, as memory freed by a first call stays resident
    and would hide part of a second. Prints a JSON line."""
    saved = np.load(args.inputs)
    offsets = neighbour_offsets(args.radius)
    affinities = torch.from_numpy(saved["affinities"]).to(args.device)
    inputs = (saved["cams"], saved["keys"], affinities, offsets)
    stride = args.stride
    # Warm-up on a tiny crop so lazily loaded kernels and allocator pools are not counted.
    tiny = (inputs[0][:, :4 * stride, :5 * stride], inputs[1], affinities[:, :4, :5].contiguous(), offsets)
    labels_with(args.only, tiny, stride, args)
    scores = scores_of(inputs, stride, args)
    synchronise(args.device)
    if args.what == "walk":
        call = lambda: walk_with(args.only, scores, inputs, args)  # noqa: E731
    else:
        del scores
        call = lambda: labels_with(args.only, inputs, stride, args)  # noqa: E731
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    gpu_before = torch.cuda.memory_allocated() if args.device.startswith("cuda") else 0
    megabytes, upper_bound = peak_during(call, args.device)
    result = {"mb": megabytes, "upper_bound": upper_bound}
    if args.device.startswith("cuda"):
        result["gpu_peak_mb"] = (torch.cuda.max_memory_allocated() - gpu_before) / 2 ** 20
    print(json.dumps(result))


def memory_in_subprocess(variant: str, what: str, stride: int, inputs_path: Path, args: argparse.Namespace) -> str:
    """The --only measurement in a fresh interpreter, formatted: 'MB', '(<=)' for a bound, GPU MB on CUDA."""
    command = [sys.executable, __file__, "--only", variant, "--what", what, "--inputs", str(inputs_path),
               "--stride", str(stride), "--radius", str(args.radius), "--beta", str(args.beta),
               "--alpha", str(args.alpha), "--exp-times", str(args.exp_times), "--threads", str(args.threads),
               "--device", args.device]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    memory = json.loads(output.strip().splitlines()[-1])
    text = f"{memory['mb']:.1f}" + (" (<=)" if memory["upper_bound"] else "")
    return text + (f" / GPU {memory['gpu_peak_mb']:.1f}" if "gpu_peak_mb" in memory else "")


def dense_needs(pixels: int, exp_times: int, bytes_per_value: int) -> tuple[float, float]:
    """(GB for up to three live hw x hw matrices (A, T, T @ T in the reference); TFLOP of the squarings)."""
    return 3 * pixels ** 2 * bytes_per_value / 1e9, exp_times * 2 * pixels ** 3 / 1e12


def region_accuracy(labels: np.ndarray, regions: np.ndarray) -> float:
    """Pixel accuracy against the scene (region i -> PRESENT[i - 1] + 1)."""
    truth = np.concatenate([[0], np.asarray(PRESENT) + 1])[regions]
    return float((labels == truth).mean())


def check_agreement(inputs, regions: np.ndarray, stride: int, args) -> None:
    cams, keys, affinities, _ = inputs
    scores = scores_of(inputs, stride, args)
    sparse = walk_with("sparse", scores, inputs, args)
    dense = walk_with("dense", scores, inputs, args)
    difference = (sparse.double().cpu() - dense).abs().max().item()
    same_argmax = torch.equal(sparse.cpu().argmax(0), dense.argmax(0))
    sparse_labels = labels_with("sparse", inputs, stride, args)
    dense_labels = labels_from_scores(dense, cams.shape[-2:], stride, keys)
    mismatched = int((sparse_labels != dense_labels).sum())
    no_walk = labels_from_scores(scores, cams.shape[-2:], stride, keys)
    print(f"check at stride {stride} ({affinities.shape[1]}x{affinities.shape[2]} map, {len(keys) + 1} channels): "
          f"max |sparse - dense| walked score = {difference:.2e} (scores up to {dense.max().item():.2f}), "
          f"map argmax equal: {same_argmax}, label pixels differing: {mismatched} / {sparse_labels.size}")
    print(f"  pixel accuracy vs the synthetic scene: CAMs alone {region_accuracy(no_walk, regions):.3f}, "
          f"after the walk {region_accuracy(sparse_labels, regions):.3f}")
    if not same_argmax or mismatched:
        raise SystemExit("sparse and dense random walks disagree")


def benchmark_stride(stride: int, args: argparse.Namespace, workdir: Path, check: bool) -> list[tuple]:
    inputs, regions = make_inputs(args, stride)
    cams, keys, affinities, offsets = inputs
    _, height, width = affinities.shape
    pixels = height * width
    if check:
        check_agreement(inputs, regions, stride, args)
    inputs_path = workdir / f"inputs_stride{stride}.npz"
    np.savez(inputs_path, cams=cams, keys=keys, affinities=affinities.cpu().numpy())
    scores = scores_of(inputs, stride, args)
    rows = []
    for variant, bytes_per_value in (("sparse", 4), ("sparse_mt", 4), ("dense", 8), ("dense32", 4)):
        if variant.startswith("sparse"):
            nnz = pixels + 2 * int(valid_pairs(height, width, offsets).sum())
            note = f"CSR nnz {nnz:,} (~{nnz * 12 / 1e6:.1f} MB)"  # int64 column + float32 value per entry
        else:
            gigabytes, teraflop = dense_needs(pixels, args.exp_times, bytes_per_value)
            note = f"{pixels ** 2 * bytes_per_value / 1e6:,.0f} MB per matrix"
            if gigabytes > args.max_dense_gb or teraflop > args.max_dense_tflop:
                rows.append((variant, stride, f"{height}x{width}", "skipped", "-", "-", "-",
                             f"{note}; would need ~{gigabytes:.1f} GB and {teraflop:.0f} TFLOP"))
                continue
        walk_s = median_seconds(lambda: walk_with(variant, scores, inputs, args), args.repeats, args.device)
        labels_s = median_seconds(lambda: labels_with(variant, inputs, stride, args), args.repeats, args.device)
        walk_mb = memory_in_subprocess(variant, "walk", stride, inputs_path, args)
        labels_mb = memory_in_subprocess(variant, "labels", stride, inputs_path, args)
        rows.append((variant, stride, f"{height}x{width}", f"{walk_s:.3f}", f"{labels_s:.3f}", walk_mb, labels_mb,
                     note))
        print(f"  {variant} stride {stride}: walk {walk_s:.3f} s +{walk_mb} MB, "
              f"labels {labels_s:.3f} s +{labels_mb} MB",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=(375, 500), help="image HxW")
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--classes", type=int, default=21, help="channels walked, background included")
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--beta", type=float, default=8.0)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--exp-times", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fine-stride", type=int, default=4, help="second stride, dense only if it fits (0: none)")
    parser.add_argument("--max-dense-gb", type=float, default=3.0)
    parser.add_argument("--max-dense-tflop", type=float, default=2.0)
    parser.add_argument("--only", choices=sorted(WALKS), help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--what", choices=("walk", "labels"), default="labels", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only:
        measure_memory(args)
        return

    print(f"image {args.size[0]}x{args.size[1]}, radius {args.radius}, beta {args.beta:g}, alpha {args.alpha:g}, "
          f"exp_times {args.exp_times} ({2 ** args.exp_times} steps), {args.classes} channels, "
          f"{args.threads} threads, device {args.device}, times: median of {args.repeats}")
    strides = [args.stride] + ([args.fine_stride] if args.fine_stride and args.fine_stride != args.stride else [])
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for stride in strides:
            rows += benchmark_stride(stride, args, Path(workdir), check=stride == args.stride)

    header = ("variant", "stride", "map", "walk s", "labels s", "walk +MB", "labels +MB", "matrix")
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    print()
    for row in [header] + rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"sparse: steps on 1 thread (the library default); sparse_mt: steps on {args.threads} threads. "
          "walk: the walk alone on pooled scores; labels: the whole label pipeline (pooling, walk, "
          "upsampling, argmax); +MB: peak RSS of a fresh process during one call minus its RSS just before "
          "(one 21-channel full-resolution float32 stack is 15.8 MB)")


if __name__ == "__main__":
    main()
