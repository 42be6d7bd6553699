"""The one training loop shared by every classifier method.

Methods differ only in the ``BatchLoss`` they plug in (mixing strategy, extra loss terms, extra
heads); the loop owns optimisation (SGD with poly decay and a larger learning rate on new layers,
as in PSA / IRN), AMP on CUDA, per-epoch logging with validation mAP, and resumable state.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import torch
from sklearn.metrics import average_precision_score
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from wsss_lib.atomic import atomic_path
from wsss_lib.data.datasets import collate_inference


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    momentum: float
    poly_power: float
    new_layer_lr_mult: float
    freeze_bn: bool = False
    num_workers: int = 0
    seed: int = 0
    max_steps: int | None = None  # stop after this many updates (DeepLab counts iterations, not epochs)

    @classmethod
    def from_config(cls, opts: Mapping[str, Any], **overrides) -> "TrainSettings":
        """Settings from a config block (train_cam, refine.affinity, segment, teacher): the keys named like
        fields are taken, other keys (augmentation, splits) are ignored; ``overrides`` win."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in opts.items() if k in names}, **overrides})

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer updates in the whole run: the poly decay reaches zero at this step."""
        steps = self.epochs * steps_per_epoch
        return steps if self.max_steps is None else min(steps, self.max_steps)


class BatchLoss(Protocol):
    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]: ...


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def build_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.SGD:
    backbone, new = model.param_groups()
    return torch.optim.SGD(
        [{"params": backbone, "lr": settings.lr},
         {"params": new, "lr": settings.lr * settings.new_layer_lr_mult}],
        lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay,
    )


def poly_schedule(optimizer: torch.optim.Optimizer, max_steps: int, power: float):
    """lr = base_lr * (1 - step / max_steps) ** power (DeepLab's 'poly' policy)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max_steps) ** power)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:  # pretrained statistics are better than those of small batches (IRN does the same)
        for module in model.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


@torch.no_grad()
def predict_scores(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 8,
                   num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid class scores and labels for every image of an InferenceDataset (full size, no augmentation)."""
    model.eval()
    loader = DataLoader(dataset, batch_sampler=dataset.batches(batch_size), collate_fn=collate_inference,
                        num_workers=num_workers)
    scores, labels = [], []
    for _, images, batch_labels in loader:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            scores.append(torch.sigmoid(model(images.to(device)).float()).cpu())
        labels.append(batch_labels)
    return torch.cat(scores).numpy(), torch.cat(labels).numpy()


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes with at least one positive of the average precision (VOC classification mAP)."""
    present = labels.sum(0) > 0
    if not present.any():
        return float("nan")
    return float(np.mean(average_precision_score(labels[:, present], scores[:, present], average=None)))


def train_classifier(model: nn.Module, train_set: Dataset, val_set: Dataset | None, settings: TrainSettings,
                     batch_loss: BatchLoss, device: torch.device, log_path: str | os.PathLike,
                     resume_path: str | os.PathLike | None = None,
                     on_epoch_end: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` in place; write one CSV row per epoch to ``log_path``; return the rows.

    If ``resume_path`` holds a state from an interrupted run (time limit, preemption), training
    continues from the last finished epoch; the state is removed when training completes.
    """
    model.to(device)
    if len(train_set) < settings.batch_size:
        raise ValueError(f"training set has {len(train_set)} images, fewer than one batch of {settings.batch_size}")
    steps_per_epoch = len(train_set) // settings.batch_size  # drop_last: BatchNorm dislikes tiny batches
    optimizer = build_optimizer(model, settings)
    total_steps = settings.total_steps(steps_per_epoch)
    scheduler = poly_schedule(optimizer, total_steps, settings.poly_power)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    rows: list[dict] = []
    start_epoch = 0
    if resume_path is not None and Path(resume_path).is_file():
        state = torch.load(resume_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        rows, start_epoch = list(state["rows"]), int(state["epoch"])
        print(f"resuming from {resume_path} after epoch {start_epoch}", flush=True)

    generator = torch.Generator().manual_seed(settings.seed)
    epochs = -(-total_steps // steps_per_epoch)
    for epoch in range(start_epoch, epochs):
        started = time.time()
        train_set.epoch = epoch
        generator.manual_seed(settings.seed * 1000 + epoch)
        loader = DataLoader(train_set, batch_size=settings.batch_size, shuffle=True, drop_last=True,
                            num_workers=settings.num_workers, generator=torch.Generator().manual_seed(epoch + settings.seed),
                            persistent_workers=False)
        set_train_mode(model, settings.freeze_bn)
        totals: dict[str, float] = {}
        n_batches = 0
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", mininterval=10, file=None)
        for images, labels in progress:
            if epoch * steps_per_epoch + n_batches == total_steps:  # the last, partial epoch of max_steps
                break
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=use_amp):
                loss, parts = batch_loss(model, images, labels, generator)
            if not torch.isfinite(loss):  # stop before a NaN reaches the weights
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n_batches += 1
            for key, value in {"loss": loss.item(), **parts}.items():
                totals[key] = totals.get(key, 0.0) + float(value)
            progress.set_postfix(loss=totals["loss"] / n_batches, refresh=False)
        row = {"epoch": epoch + 1, **{f"train_{k}": v / max(n_batches, 1) for k, v in totals.items()},
               "lr": optimizer.param_groups[0]["lr"]}
        if val_set is not None:
            row["val_map"] = mean_average_precision(*predict_scores(model, val_set, device, num_workers=settings.num_workers))
        row["seconds"] = time.time() - started
        rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        _write_log(log_path, rows)
        if on_epoch_end is not None:
            on_epoch_end(row)
        if resume_path is not None and epoch + 1 < epochs:
            with atomic_path(resume_path, suffix=".pt") as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                            "rows": rows, "epoch": epoch + 1}, tmp)
    if resume_path is not None and Path(resume_path).exists():
        Path(resume_path).unlink()
    return rows


def _write_log(path: str | os.PathLike, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
