"""Where a job computes: the device, mixed precision (AMP), memory layout and data-loading workers.

Every stage asks these helpers rather than deciding for itself, so that training and inference agree: AMP on
CUDA only (bfloat16 where the GPU has it, float16 with loss scaling where not), channels-last for convolutional
nets on CUDA, cuDNN off for inputs of many sizes, and as many loader workers as the job's cores can feed.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


def resolve_device(name: str) -> torch.device:
    """The config's ``device``: "auto" (CUDA when there is one, else the CPU) or a torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def setup_job(device: str, threads: int, seed: int | None = None) -> torch.device:
    """A job's set-up: torch uses ``threads`` CPU threads (at least 1), the global RNG is seeded with ``seed``
    (when given: a training job's network initialisation), and the config's ``device`` is resolved."""
    torch.set_num_threads(max(1, threads))
    if seed is not None:
        torch.manual_seed(seed)
    return resolve_device(device)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype on ``device``: bfloat16 on GPUs that support it (no loss scaling needed), float16
    with a GradScaler on older ones, None (full float32) on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (:func:`amp_dtype`), nothing elsewhere: the one AMP switch of every stage."""
    dtype = amp_dtype(device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for training under :func:`autocast`: float16's largest value is 65504, so small gradients
    underflow to 0 unless the loss is scaled up first; bfloat16 has float32's range and needs none (the scaler
    is then disabled: a no-op that still saves and loads its state)."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)


@contextlib.contextmanager
def varied_input_sizes(device: torch.device) -> Iterator[None]:
    """Inference on full-size images of many sizes: cuDNN off on CUDA while inside (restored on leaving).

    cuDNN builds an execution plan for every input shape it has not seen. On an H200 (torch 2.11, cuDNN 9),
    the VOC sample's CAM net (EfficientNet-Lite0, scales 1 / 0.5 / 1.5 with flips; its 300 photos come in 93
    sizes) took per image of a new size 2.4 s with cuDNN's heuristics and 6.6 s with autotuning, but 33 ms
    with cuDNN off (PyTorch's own kernels); on sizes seen before, 16 ms with cuDNN and 17 ms without. With
    cuDNN, make_cams ran at 1.0 image/s there, no faster than on 2 CPU cores. Training on fixed-size crops
    keeps cuDNN (and its autotuning).
    """
    if device.type != "cuda":
        yield
        return
    enabled = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = False
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = enabled


def to_device(batch: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A batch to ``device`` without blocking the host (its pinned memory makes the copy asynchronous);
    channels-last for 4-D image batches when ``channels_last`` (see :func:`place_model`)."""
    batch = batch.to(device, non_blocking=True)
    if channels_last and batch.ndim == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def uses_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Channels-last pays on CUDA for convolutional nets (cuDNN's tensor-core kernels read NHWC): those with
    BatchNorm2d layers (ResNets, EfficientNet, small_cnn); a ViT (LayerNorm) gains nothing from it."""
    return device.type == "cuda" and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def place_model(model: nn.Module, device: torch.device) -> bool:
    """Move ``model`` to ``device``, channels-last where that pays; returns whether its input batches
    should be channels-last too (:func:`to_device`)."""
    channels_last = uses_channels_last(model, device)
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    return channels_last


def loader_workers(configured: int, threads: int, device: torch.device) -> int:
    """Data-loading worker processes for a job of ``threads`` cores: on a GPU, where the cores only feed the device,
    one per thread (at least the configured number): with one worker, ResNet-50 CAM training at crop 320, batch 8 on
    an H200 waited for data 73% of its epoch at 68 img/s. On a CPU, where loading and the network share the job's
    cores, one worker per 4 threads at most, none for 2-3 threads, and one for a 1-thread job
    (benchmarks/train_throughput.py, 2 cores). Loading is a small share of a 2-thread step, so a worker buys nothing
    there (small_cnn at 128 px 33.4 img/s without one, 32.7 with one; efficientnet_lite0 at 320: data wait 5%). A
    1-thread job is one of two sharing 2 cores (the demo's job_threads: 1) or has the machine alone; its worker
    loads on the other core while the network runs (small_cnn_w16: 56.8 -> 67.4 img/s, data wait 16% -> 3.5%)."""
    if device.type == "cuda":
        return max(configured, threads)
    return min(configured, 1 if threads == 1 else threads // 4)
