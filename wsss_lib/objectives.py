"""Training objectives of the CAM methods, as pluggable BatchLoss functions for the shared loop.

A method = a mixing strategy + optional uncertainty regularisers:

- ``none``: the baseline CAM classifier (Zhou et al. CVPR 2016);
- ``mixup``: images mixed with lambda ~ Beta(alpha, alpha) (Zhang et al. ICLR 2018), as Mixup-CAM
  (Chang et al. BMVC 2020) uses it;
- ``manifold_mixup``: the same mixing applied to hidden features at a backbone stage drawn at
  random (Verma et al. ICML 2019), the forward resumed from there;
- ``fmix``: images mixed by a binary low-frequency Fourier mask (Harris et al. 2020), the loss
  weighted by the mask's actual mean.

Mixup-CAM's regularisers: entropy of the predicted class probabilities and the concentration
(spatial spread) of the present classes' CAMs, each with its weight in config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from wsss_lib.losses import class_spreads, mixed_multilabel_loss, prediction_entropy, present_sum
from wsss_lib.mixing import fmix_mask, mix, random_permutation, sample_lambda
from wsss_lib.training import BatchLoss

MIXING_STRATEGIES = ("none", "mixup", "manifold_mixup", "fmix")


@dataclass(frozen=True)
class Objective:
    mixing: str = "none"
    alpha: float = 1.0
    decay_power: float = 3.0
    # mixing points (0 = input, k = after stage k); None = all but the last
    manifold_stages: Sequence[int] | None = None
    entropy_weight: float = 0.0
    concentration_weight: float = 0.0
    subcategory_weight: float = 0.0  # SC-CAM: weight of the sub-category head's loss (the paper uses 5)

    def __post_init__(self):
        if self.mixing not in MIXING_STRATEGIES:
            raise ValueError(f"unknown mixing strategy {self.mixing!r}; choose from {', '.join(MIXING_STRATEGIES)}")


def objective_from_config(train_cam: Mapping[str, Any], subcategory_weight: float = 0.0) -> Objective:
    """The Objective described by a method's ``train_cam`` config block."""
    stages = train_cam.get("manifold_stages")
    return Objective(
        mixing=train_cam.get("mixing", "none"), alpha=float(train_cam.get("mix_alpha", 1.0)),
        decay_power=float(train_cam.get("fmix_decay_power", 3.0)),
        manifold_stages=None if stages is None else tuple(stages),
        entropy_weight=float(train_cam.get("entropy_weight", 0.0)),
        concentration_weight=float(train_cam.get("concentration_weight", 0.0)),
        subcategory_weight=float(subcategory_weight),
    )


def mixed_features(model, images: torch.Tensor, objective: Objective, generator: torch.Generator
                   ) -> tuple[torch.Tensor, torch.Tensor, float | torch.Tensor]:
    """Backbone features of the (possibly mixed) batch, the partner permutation and the mixing weight.

    The weight is the share of each image's own label in the loss: lambda for mixup and manifold
    mixup, the mask mean for FMix, 1 without mixing.
    """
    batch = images.shape[0]
    if objective.mixing == "none":
        return model.features(images), torch.arange(batch, device=images.device), 1.0
    perm = random_permutation(batch, generator).to(images.device)
    lam = sample_lambda(objective.alpha, generator)
    if objective.mixing == "mixup":
        return model.features(mix(images, perm, lam)), perm, lam
    if objective.mixing == "fmix":
        mask = fmix_mask(lam, tuple(images.shape[-2:]), objective.decay_power, generator).to(images.device)
        return model.features(mix(images, perm, mask)), perm, mask.mean()
    stages = model.backbone.stages
    eligible = list(objective.manifold_stages) if objective.manifold_stages is not None else list(range(len(stages)))
    if not eligible or min(eligible) < 0 or max(eligible) > len(stages):
        raise ValueError(f"manifold_stages {eligible} must lie in 0..{len(stages)} for this backbone")
    k = eligible[int(torch.randint(len(eligible), (1,), generator=generator))]
    hidden = images
    for stage in stages[:k]:
        hidden = stage(hidden)
    hidden = mix(hidden, perm, lam)
    for stage in stages[k:]:
        hidden = stage(hidden)
    return hidden, perm, lam


def build_batch_loss(objective: Objective) -> BatchLoss:
    """The BatchLoss of a method: mixed multi-label loss plus the weighted regularisers."""

    def batch_loss(model, images, labels, generator):
        # labels: the parent classes, then (for a model with a sub-category head) the sub-categories
        labels, sub_labels = labels[:, : model.n_classes], labels[:, model.n_classes :]
        features, perm, weight = mixed_features(model, images, objective, generator)
        class_maps = model.classifier(features)
        logits = class_maps.mean((-2, -1))  # == classifier(GAP(features)): the 1x1 conv is linear
        loss = mixed_multilabel_loss(logits, labels, perm, weight)
        parts = {"cls": loss.detach()}
        if sub_labels.shape[1] != model.n_subcategories:
            raise ValueError(f"{sub_labels.shape[1]} label columns beyond the {model.n_classes} classes, "
                             f"but the model has {model.n_subcategories} sub-categories")
        if model.sub_classifier is not None:
            sub_loss = mixed_multilabel_loss(model.sub_classifier(features).mean((-2, -1)), sub_labels, perm, weight)
            loss = loss + objective.subcategory_weight * sub_loss
            parts["subcategory"] = sub_loss.detach()
        if objective.entropy_weight:
            # On the predictions, as Mixup-CAM (Sec. 3) defines it. mva-wsss (train_cam.py) passes the mixed
            # *labels* to its entropy term for the mixing methods, a constant with no gradient; we follow the paper.
            entropy = prediction_entropy(logits)
            loss = loss + objective.entropy_weight * entropy
            parts["entropy"] = entropy.detach()
        if objective.concentration_weight:
            # mva-wsss train_cam.py: the ReLU class maps softmaxed over the classes; a mixed image's term is
            # lam * L(own classes) + (1 - lam) * L(partner's classes) (weight = 1, perm = identity unmixed)
            spreads = class_spreads(torch.softmax(F.relu(class_maps), dim=1))
            concentration = weight * present_sum(spreads, labels) + (1 - weight) * present_sum(spreads, labels[perm])
            loss = loss + objective.concentration_weight * concentration
            parts["concentration"] = concentration.detach()
        return loss, parts

    return batch_loss
