"""Pixel affinities within a radius: pair sets, labels, the affinity of an embedding, and the PSA loss.

AffinityNet (Ahn & Kwak, CVPR 2018, "Learning Pixel-level Semantic Affinity with Image-level
Supervision", Sec. 3.3-3.4) predicts, for each pair of feature-map positions closer than a radius
``gamma`` (5 at stride 8), the affinity ``a_ij = exp(-||f_i - f_j||_1)`` of their embeddings (Eq. 2;
PSA's code averages the absolute difference over channels, which we follow). Every pair is stored
once, through a half-plane set of offsets, as an ``(n_offsets, h, w)`` array: entry ``[o, y, x]`` is
the pair ``(y, x) -> (y + dy_o, x + dx_o)``; pairs that leave the map are invalid (affinity 0, masked
out of the loss). PSA keeps only the "from" pixels whose every offset stays inside the map; we keep
every in-bounds pair, so border pixels have affinities too.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

IGNORE = 255


@lru_cache(maxsize=None)
def neighbour_offsets(radius: int) -> tuple[tuple[int, int], ...]:
    """Offsets (dy, dx) with 0 < dy^2 + dx^2 < radius^2 in the half plane dy > 0 or (dy == 0, dx > 0).

    Each unordered pair of positions closer than ``radius`` is then reached exactly once
    (PSA's search set: 34 offsets for radius 5).
    """
    if radius < 2:
        raise ValueError(f"affinity radius must be >= 2 (a radius of 1 reaches no neighbour), got {radius}")
    offsets = [(0, dx) for dx in range(1, radius)]
    offsets += [(dy, dx) for dy in range(1, radius) for dx in range(-radius + 1, radius)
                if dy * dy + dx * dx < radius * radius]
    return tuple(offsets)


def _overlap(size: int, shift: int) -> tuple[slice, slice]:
    """Source and shifted slices along one axis for the positions p with 0 <= p + shift < size."""
    if shift >= 0:
        return slice(0, max(size - shift, 0)), slice(shift, size)
    return slice(-shift, size), slice(0, max(size + shift, 0))


def shifted_pairs(values: torch.Tensor, offsets, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """For (..., h, w) values, stacks ``(first, second)`` of shape (..., n_offsets, h, w) holding the
    value at p and at p + offset; out-of-map partners are ``fill``. Also usable on label maps."""
    *lead, h, w = values.shape
    second = values.new_full((*lead, len(offsets), h, w), fill)
    for o, (dy, dx) in enumerate(offsets):  # a loop over the ~34 offsets, each a whole-map slice
        ys, yt = _overlap(h, dy)
        xs, xt = _overlap(w, dx)
        second[..., o, ys, xs] = values[..., yt, xt]
    first = values.unsqueeze(-3).expand(*lead, len(offsets), h, w)
    return first, second


def valid_pairs(height: int, width: int, offsets) -> np.ndarray:
    """(n_offsets, h, w) bool: True where p + offset lies inside the map."""
    valid = np.zeros((len(offsets), height, width), dtype=bool)
    for o, (dy, dx) in enumerate(offsets):
        ys, _ = _overlap(height, dy)
        xs, _ = _overlap(width, dx)
        valid[o, ys, xs] = True
    return valid


def pair_labels(labels: torch.Tensor, offsets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PSA's three pair sets from a (..., h, w) label map with IGNORE (255):

    background-positive (both background), foreground-positive (same foreground class) and negative
    (different classes), each a float (..., n_offsets, h, w) 0/1 mask. Pairs that touch an ignored
    pixel or leave the map belong to none.
    """
    first, second = shifted_pairs(labels.long(), offsets, fill=IGNORE)
    known = (first != IGNORE) & (second != IGNORE)
    same = first == second
    bg_pos = known & same & (first == 0)
    fg_pos = known & same & (first != 0)
    neg = known & ~same
    return bg_pos.float(), fg_pos.float(), neg.float()


def pair_affinities(embedding: torch.Tensor, offsets) -> torch.Tensor:
    """(B, C, h, w) embedding -> (B, n_offsets, h, w) affinities exp(-mean_c |f_p - f_{p+o}|); 0 off the map.

    One offset at a time, so the working memory is one (B, C, h, w) difference, not the (B, C, n_offsets, h, w)
    stack; differentiable through :class:`PairAffinities`' own backward.
    """
    return PairAffinities.apply(embedding, tuple(offsets))


class PairAffinities(torch.autograd.Function):
    """:func:`pair_affinities` channels-last, with a hand-written backward.

    The channel mean runs over contiguous memory, and each offset's gradient is added in place into one buffer
    (autograd's backward of the 34 offsets' two slices gives every slice a zero-filled gradient of the whole
    embedding and sums the 68 of them). At the demo's 8 x 448 x 16 x 16 on one CPU thread: forward + backward
    0.06 s, where channels-first with autograd took 0.21 s of a 0.36 s AffinityNet training step.
    The gradient, from the saved affinities: d a / d f_p = -a sign(f_p - f_q) / C, the opposite for f_q
    (sign(0) = 0, as autograd's abs).
    """

    @staticmethod
    def forward(ctx, embedding: torch.Tensor, offsets: tuple[tuple[int, int], ...]) -> torch.Tensor:
        last = embedding.permute(0, 2, 3, 1).contiguous()  # free when the net already runs channels-last
        b, h, w, _ = last.shape
        affinity = embedding.new_zeros((b, len(offsets), h, w))
        for o, (dy, dx) in enumerate(offsets):
            ys, yt = _overlap(h, dy)
            xs, xt = _overlap(w, dx)
            distance = (last[:, ys, xs] - last[:, yt, xt]).abs_().mean(-1)
            affinity[:, o, ys, xs] = torch.exp(distance.neg_())
        ctx.offsets = offsets
        ctx.save_for_backward(last, affinity)
        return affinity

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_affinity: torch.Tensor):
        last, affinity = ctx.saved_tensors
        _, h, w, channels = last.shape
        grad = torch.zeros_like(last)
        for o, (dy, dx) in enumerate(ctx.offsets):
            ys, yt = _overlap(h, dy)
            xs, xt = _overlap(w, dx)
            weight = (grad_affinity[:, o, ys, xs] * affinity[:, o, ys, xs]).div_(-channels).unsqueeze(-1)
            step = torch.sign(last[:, ys, xs] - last[:, yt, xt]).mul_(weight)
            grad[:, ys, xs] += step
            grad[:, yt, xt] -= step
        return grad.permute(0, 3, 1, 2), None


def affinity_loss(affinity: torch.Tensor, bg_pos: torch.Tensor, fg_pos: torch.Tensor, neg: torch.Tensor,
                  eps: float = 1e-5) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PSA's class-balanced affinity loss (Eq. 3-6 and train_aff.py):

    L = L_bg+/4 + L_fg+/4 + L_neg/2, where L_bg+ and L_fg+ are the mean -log(a) over background- and
    foreground-positive pairs and L_neg the mean -log(1 - a) over negative pairs (eps-guarded logs and
    counts, as in PSA). Each term is averaged over its own pairs, so the abundant background pairs do not
    drown the others.
    """
    affinity = affinity.float()
    bg = (-bg_pos * torch.log(affinity + eps)).sum() / (bg_pos.sum() + eps)
    fg = (-fg_pos * torch.log(affinity + eps)).sum() / (fg_pos.sum() + eps)
    ng = (-neg * torch.log(1.0 + eps - affinity)).sum() / (neg.sum() + eps)
    loss = bg / 4 + fg / 4 + ng / 2
    return loss, {"bg_loss": bg.detach(), "fg_loss": fg.detach(), "neg_loss": ng.detach()}
