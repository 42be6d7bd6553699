"""Training losses for mixed-sample CAM training (mixup / FMix) and Mixup-CAM regularisers.

* :func:`mixed_multilabel_loss`: mixup's loss mixing (Zhang et al., ICLR 2018, Sec. 2), with the
  multi-label soft-margin loss used by CAM classifiers (IRN, Ahn et al. CVPR 2019).
* :func:`prediction_entropy` and :func:`concentration_loss`: the two uncertainty regularisers of
  Mixup-CAM (Chang et al., "Mixup-CAM: Weakly-supervised Semantic Segmentation via Uncertainty
  Regularization", BMVC 2020, Sec. 3): entropy minimisation on the class predictions of mixed
  images, and a concentration loss on each present class's response map, the latter taken from
  SCOPS (Hung et al., "SCOPS: Self-Supervised Co-Part Segmentation", CVPR 2019, Sec. 3,
  concentration loss ``sum_{u,v} ||(u, v) - (c_u, c_v)||^2 R(u, v) / z``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["mixed_multilabel_loss", "prediction_entropy", "concentration_loss", "class_spreads", "present_sum",
           "concentration_loss_reference"]


def mixed_multilabel_loss(logits: torch.Tensor, labels: torch.Tensor, perm: torch.Tensor,
                          weight: float | torch.Tensor) -> torch.Tensor:
    """``weight * L(logits, y) + (1 - weight) * L(logits, y[perm])`` (mixup, Zhang et al. 2018, Sec. 2).

    ``L`` is :func:`torch.nn.functional.multilabel_soft_margin_loss`. Mixing the two losses rather
    than the labels is equivalent for this loss (it is linear in the target) and matches how mixup
    is usually implemented. ``weight`` is a scalar: the mixup ``lam``, or for FMix the actual mean
    of the mask, which is the exact share of pixels taken from ``x`` (the requested ``lam`` can
    differ by rounding).
    """
    if isinstance(weight, torch.Tensor) and weight.ndim != 0:
        raise ValueError(f"weight must be a scalar, got shape {tuple(weight.shape)}")
    labels = labels.to(logits.dtype)
    loss_a = F.multilabel_soft_margin_loss(logits, labels)
    loss_b = F.multilabel_soft_margin_loss(logits, labels[perm])
    return weight * loss_a + (1 - weight) * loss_b


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy of the predicted class probabilities (Mixup-CAM, Chang et al. 2020, Sec. 3).

    ``H(p) = -(p log p + (1 - p) log(1 - p))`` with ``p = sigmoid(z)``, averaged over batch and
    classes; minimise it (positive loss weight) to make predictions on mixed images confident.
    Computed from the logits as ``softplus(z) - z * sigmoid(z)``, which is the same quantity
    (``log p = -softplus(-z)``, ``log(1 - p) = -softplus(z)``, ``softplus(-z) = softplus(z) - z``)
    but never takes the log of a probability that has underflowed to 0 or 1, so it stays finite
    and differentiable for saturated logits. Unlike an entropy of the labels, it has a gradient
    w.r.t. the logits: ``dH/dz = -z * p * (1 - p)``.
    """
    return (F.softplus(logits) - logits * torch.sigmoid(logits)).mean()


# mva-wsss loss_scheduler_optimizer.py (from SCOPS): added to every pixel "to prevent gradient explosion"
SCOPS_EPS = 1e-3


def grid_coordinates(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Pixel coordinates ``2 i / size - 1`` for ``i = 0 .. size - 1``, in ``[-1, 1)`` (SCOPS's
    ``get_coordinate_tensors``, kept by mva-wsss): the loss is then independent of the map's resolution."""
    return torch.arange(size, dtype=dtype, device=device) * (2.0 / size) - 1.0


def concentration_loss(maps: torch.Tensor, labels: torch.Tensor, eps: float = SCOPS_EPS) -> torch.Tensor:
    """Spatial spread of each present class's map, summed over classes, mean over the batch:
    :func:`present_sum` of :func:`class_spreads`.

    Mixup-CAM (Chang et al. BMVC 2020, Sec. 3) concentration loss, after SCOPS (Hung et al. CVPR
    2019, Sec. 3), in the form mva-wsss trains with (loss_scheduler_optimizer.py, train_cam.py):
    for each ``(image, class)`` with ``labels > 0.5``, ``p = (m + eps) / sum(m + eps)`` over the
    ``h x w`` grid, ``mu = sum p * (y, x)`` and ``spread = sum p * ||(y, x) - mu||^2`` with
    coordinates in ``[-1, 1)`` (:func:`grid_coordinates`). A uniform map therefore gives
    ``(h^2 - 1) / (3 h^2) + (w^2 - 1) / (3 w^2)`` (just under 2/3), whatever ``eps``. ``maps``
    ``(B, K, h, w)`` must be non-negative: mva-wsss passes the ReLU class maps softmaxed over the
    classes, so every map lies in ``[0, 1]`` and ``eps`` bounds the normaliser away from zero
    (the gradient cannot grow as ``1 / mass`` for a faint map). ``labels`` ``(B, K)`` may be soft;
    a class is present above 0.5, as the reference's ``outputs[b] > 0.5``.

    The 2-D sum separates into the two axes' marginals, so each moment costs a reduction over one
    axis instead of a full ``h * w`` product with a coordinate grid. The spread uses the centred
    form ``sum p (y - mu)^2`` rather than ``E[y^2] - mu^2``, which cancels for concentrated maps
    far from the origin. Absent classes are removed with ``torch.where`` rather than by indexing,
    which keeps shapes static (no host sync on GPU) and gives them an exactly zero gradient.
    """
    return present_sum(class_spreads(maps, eps), labels)


def present_sum(spreads: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of the (B, K) ``spreads`` over the classes present (``labels > 0.5``), mean over the batch."""
    present = labels.to(spreads.device) > 0.5
    return torch.where(present, spreads, torch.zeros_like(spreads)).sum() / spreads.shape[0]


def class_spreads(maps: torch.Tensor, eps: float = SCOPS_EPS) -> torch.Tensor:
    """(B, K) spread of every map (see :func:`concentration_loss`): computed once, it serves both mixing
    partners' label sets."""
    _, _, height, width = maps.shape
    shifted = maps + eps
    p = shifted / shifted.sum(dim=(-2, -1), keepdim=True)
    rows = grid_coordinates(height, maps.dtype, maps.device)
    cols = grid_coordinates(width, maps.dtype, maps.device)
    p_rows = p.sum(dim=-1)
    p_cols = p.sum(dim=-2)
    mu_y = (p_rows * rows).sum(dim=-1, keepdim=True)
    mu_x = (p_cols * cols).sum(dim=-1, keepdim=True)
    return (p_rows * (rows - mu_y) ** 2).sum(dim=-1) + (p_cols * (cols - mu_x) ** 2).sum(dim=-1)


def concentration_loss_reference(maps: torch.Tensor, labels: torch.Tensor, eps: float = SCOPS_EPS) -> torch.Tensor:
    """Per-image, per-class loop over the literal 2-D formula of :func:`concentration_loss`.

    Kept as the test oracle and benchmark baseline: it shares no code with the vectorised version
    (full coordinate grid built by linspace, no marginals, no masking).
    """
    batch, n_classes, height, width = maps.shape
    ys = torch.linspace(-1.0, 1.0, height + 1, dtype=maps.dtype, device=maps.device)[:-1]
    xs = torch.linspace(-1.0, 1.0, width + 1, dtype=maps.dtype, device=maps.device)[:-1]
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    terms = []
    for b in range(batch):
        for k in range(n_classes):
            if labels[b, k] <= 0.5:
                continue
            m = maps[b, k] + eps
            p = m / m.sum()
            mu_y = (p * yy).sum()
            mu_x = (p * xx).sum()
            terms.append((p * ((yy - mu_y) ** 2 + (xx - mu_x) ** 2)).sum())
    if not terms:
        return maps.new_zeros(())
    return torch.stack(terms).sum() / batch
