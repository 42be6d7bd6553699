"""Mixup-CAM concentration loss: vectorised vs one Python iteration per (image, class).

Both variants get the same CAMs and labels and must agree in value and gradient (checked before
timing). Reports milliseconds per forward + backward call of each and their ratio.

    .venv/bin/python benchmarks/concentration_loss.py --threads 2 --repeats 50
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from wsss_lib.losses import concentration_loss, concentration_loss_reference

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def forward_backward(loss_fn: LossFn, cams: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = cams.detach().requires_grad_()
    loss = loss_fn(leaf, labels)
    loss.backward()
    return loss.detach(), leaf.grad


def ms_per_call(loss_fn: LossFn, cams: torch.Tensor, labels: torch.Tensor, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        forward_backward(loss_fn, cams, labels)
    start = time.perf_counter()
    for _ in range(repeats):
        forward_backward(loss_fn, cams, labels)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--size", type=int, default=32, help="CAM side length (h = w)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(args.seed)
    cams = torch.relu(torch.randn(args.batch, args.classes, args.size, args.size, generator=generator))
    labels = (torch.rand(args.batch, args.classes, generator=generator) < 0.5).float()
    labels[0, 0] = 1.0  # the loop needs at least one present class to have a graph

    value_fast, grad_fast = forward_backward(concentration_loss, cams, labels)
    value_slow, grad_slow = forward_backward(concentration_loss_reference, cams, labels)
    torch.testing.assert_close(value_fast, value_slow, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_fast, grad_slow, rtol=1e-4, atol=1e-6)

    fast = ms_per_call(concentration_loss, cams, labels, args.repeats)
    slow = ms_per_call(concentration_loss_reference, cams, labels, args.repeats)
    print(f"cams {tuple(cams.shape)} float32, {int(labels.sum())}/{labels.numel()} classes present, "
          f"{args.threads} threads, {args.repeats} repeats; forward + backward; values and gradients agree")
    print(f"vectorised      {fast:8.3f} ms/call")
    print(f"per-class loop  {slow:8.3f} ms/call")
    print(f"speed-up        {slow / fast:8.1f}x")


if __name__ == "__main__":
    main()
