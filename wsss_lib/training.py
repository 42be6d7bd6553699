"""The one training loop shared by every network the pipeline trains (CAM classifiers, the ViT teacher,
sub-category rounds, AffinityNet, DeepLab), in the shape of torchvision's reference scripts.

Networks differ only in the ``BatchLoss`` they plug in (mixing strategy, extra loss terms, extra
heads); the loop owns optimisation (SGD with poly decay and a larger learning rate on new layers,
as in PSA / IRN; optional gradient-norm clipping), AMP on CUDA, per-epoch logging with validation
mAP and accuracy, the choice of which epoch's weights to keep (with early stopping), and resumable state.
:func:`fit` runs the epochs, picks the weights, stops early and resumes; :func:`train_one_epoch` makes an
epoch's updates and :func:`evaluate` scores the validation images; :class:`RunState` holds what they share.
Device, AMP and loader-worker choices are :mod:`wsss_lib.device`'s.

On a GPU the loop does not wait on the device between steps: loss values are summed on the device and
read back every ``SYNC_EVERY`` steps (every step on the CPU, where reading costs nothing), batches come
from pinned memory with non-blocking copies, convolutional nets run channels-last, and cuDNN picks its
kernels for the fixed crop size. The data loader and its workers persist across epochs.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from wsss_lib.atomic import atomic_path
from wsss_lib.data.datasets import collate_inference
from wsss_lib.device import (autocast, grad_scaler, loader_workers, place_model, to_device, uses_channels_last,
                             varied_input_sizes)
from wsss_lib.models.checkpoint import load_torch_file, save_torch_file


# How a run picks the weights it returns: (row column watched, True if higher is better), None for the last epoch.
SELECTIONS: dict[str, tuple[str, bool] | None] = {
    "last": None,
    # mva-wsss train_cam.py: ModelCheckpoint(monitor="val_accuracy", mode="max"), the exact-match accuracy of
    # the rounded sigmoid scores on the validation images; compute_cams.py loads that best_model.ckpt
    "best_val_accuracy": ("val_accuracy", True),
    # SC-CAM train_cls.py: an epoch's weights are saved when its mean training loss is the lowest so far
    "lowest_train_loss": ("train_loss", False),
}


def _require_whole_number(name: str, value: Any, minimum: int) -> None:
    """A count from the config: a whole number (3 or 3.0, not True or 2.5) of at least ``minimum``."""
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


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
    poly_steps: int | None = None  # horizon of the poly decay; None: the run's own length (lr reaches 0 at its end)
    warmup_steps: int = 0  # the lr ramps up linearly over the first updates (0: none, as every source trains)
    grad_clip_norm: float | None = None  # clip the global gradient norm to this (None: no clipping)
    select: str = "last"  # which epoch's weights the run returns: see SELECTIONS
    early_stop_patience: int | None = None  # stop after this many epochs without a better `select` score
    val_every: int = 1  # validate after every n-th epoch and after the last (validation is not free on a CPU)

    def __post_init__(self):
        _require_whole_number("val_every", self.val_every, minimum=1)
        _require_whole_number("warmup_steps", self.warmup_steps, minimum=0)
        if self.select not in SELECTIONS:
            raise ValueError(f"select {self.select!r}: choose one of {', '.join(SELECTIONS)}")
        if self.early_stop_patience is not None and (self.select == "last" or self.early_stop_patience < 1):
            raise ValueError(f"early_stop_patience {self.early_stop_patience} watches the `select` score: it needs "
                             f"a select other than 'last' (got {self.select!r}) and a patience of at least 1")

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


@dataclass(frozen=True)
class ResumeSpec:
    """Where and how often :func:`fit` saves the state it resumes from, and whose state it is.

    ``path`` lies outside the job's declared outputs, so Snakemake neither deletes it before a rerun nor
    treats it as a result. ``fingerprint`` identifies the job (``wsss_lib.config.job_fingerprint``: its
    params, code hash included, and its inputs on disk); a state saved under another fingerprint is
    discarded. Exactly one interval is set: ``every_epochs`` (save after every n-th finished epoch) or
    ``every_steps`` (after every n-th optimizer update, mid-epoch included: DeepLab counts iterations).
    The interval is deliberately not part of the fingerprint: how often a run is saved does not change
    what it computes, so a state saved at any step is resumed whatever the interval is now.
    """

    path: str | os.PathLike
    fingerprint: str
    every_epochs: int | None = None
    every_steps: int | None = None

    def __post_init__(self):
        intervals = [n for n in (self.every_epochs, self.every_steps) if n is not None]
        if len(intervals) != 1 or intervals[0] < 1:
            raise ValueError(f"set exactly one of every_epochs / every_steps, to at least 1; got "
                             f"every_epochs={self.every_epochs}, every_steps={self.every_steps}")

    @classmethod
    def for_job(cls, path: str | os.PathLike, params: Mapping[str, Any], inputs: Iterable[str | os.PathLike],
                intervals: Mapping[str, int], per: str = "epochs") -> "ResumeSpec":
        """The spec of a Snakemake training job from plain values its script reads off the job: ``path`` (the
        rule's ``params.resume``), ``params`` and ``inputs`` (all of them: ``job_fingerprint`` hashes them) and
        ``intervals`` (the config's ``resume`` block). ``per`` "epochs" takes ``every_epochs``, "iterations"
        ``every_iterations`` (saved as optimizer steps). The interval comes from the config, not params, so it
        is not part of the job's identity.
        """
        from wsss_lib.config import job_fingerprint

        fingerprint = job_fingerprint(params, inputs)
        every = intervals[f"every_{per}"]
        if per == "epochs":
            return cls(path, fingerprint, every_epochs=every)
        if per == "iterations":
            return cls(path, fingerprint, every_steps=every)
        raise ValueError(f"resume interval per {per!r}: choose epochs or iterations")


class BatchLoss(Protocol):
    """(model, images, labels, generator) -> (the loss to minimise, its logged parts). The parts are 0-d
    tensors (detached, on the loss's device) or floats: the loop sums them without waiting for the device."""

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]: ...


def build_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.SGD:
    """SGD over ``model.param_groups()``: (pretrained, new layers[, new-layer biases]). New layers train at
    ``new_layer_lr_mult`` times the lr (PSA / IRN / DeepLab: 10x); a third group, new-layer biases, at twice
    that and without weight decay (DeepLab-v2's Caffe solver, kept by deeplab-pytorch: 20x, decay 0)."""
    groups = model.param_groups()
    new_lr = settings.lr * settings.new_layer_lr_mult
    param_groups = [{"params": groups[0], "lr": settings.lr}, {"params": groups[1], "lr": new_lr}]
    if len(groups) == 3:
        param_groups.append({"params": groups[2], "lr": 2 * new_lr, "weight_decay": 0.0})
    return torch.optim.SGD(param_groups, lr=settings.lr, momentum=settings.momentum,
                           weight_decay=settings.weight_decay)


def poly_schedule(optimizer: torch.optim.Optimizer, max_steps: int, power: float, warmup_steps: int = 0):
    """lr = base_lr * (1 - step / max_steps) ** power (DeepLab's 'poly' policy); 0 from ``max_steps`` on.

    With ``warmup_steps`` the poly lr is also scaled by ``(step + 1) / warmup_steps`` over the first updates, so
    update ``warmup_steps - 1`` is the first at the full poly lr: the linear "gradual warmup" of Goyal et al.
    ("Accurate, Large Minibatch SGD", 2017, Sec. 2.2). None of the WSSS sources warms up; a net trained from random
    weights can need it (see the synthetic demo's ``train_cam.warmup_steps`` in config/config.yaml).
    """
    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        return ramp * max(0.0, 1 - step / max_steps) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:  # pretrained statistics are better than those of small batches (IRN does the same)
        for module in model.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    """The seed of one random stream (``"order"``, ``"batch_loss"``) of one epoch of a run seeded ``seed``.

    The first 63 bits of SHA-256 of ``stream/seed/epoch``: unlike ``seed * k + epoch`` it never gives two
    (stream, seed, epoch) triples the same stream, and unlike ``hash()`` of a tuple with a string it
    is the same in every process (no PYTHONHASHSEED), which a resumed run relies on.
    """
    digest = hashlib.sha256(f"{stream}/{seed}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class EpochOrder(Sampler[tuple[int, int]]):
    """The ``(epoch, index)`` items of one epoch in its shuffled order, positions ``start`` to ``stop`` of it;
    :meth:`set_epoch` moves it to another epoch (one loader, and its workers, serve the whole run).

    Epoch e's order is ``torch.randperm(n)`` from a generator seeded with ``epoch_seed(seed, e, "order")``
    alone, so a run resumed mid-epoch rebuilds the same order and starts at the first unconsumed sample
    without loading the consumed ones. (DataLoader's own ``shuffle=True, generator=g`` draws a worker seed
    from ``g`` before the permutation, so its order is not ``randperm`` of ``g`` and could not be rebuilt
    this way.) The epoch travels with each index because a persistent worker holds its own copy of the
    dataset, which the loop cannot reach (see :class:`EpochItems`).
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start: int = 0, stop: int | None = None) -> None:
        stop = self.n if stop is None else stop
        if not 0 <= start <= stop <= self.n:
            raise ValueError(f"positions {start}..{stop} are not within an epoch of {self.n} samples")
        self.epoch, self.start, self.stop = epoch, start, stop

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, "order"))
        order = torch.randperm(self.n, generator=generator)
        return iter((self.epoch, index) for index in order[self.start:self.stop].tolist())

    def __len__(self) -> int:
        return self.stop - self.start


class EpochItems(Dataset):
    """Serves ``(epoch, index)`` items of a training set whose augmentation depends on its ``epoch``
    attribute: the attribute is set from the item, in whichever process (loader worker) loads it."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        epoch, index = item
        self.dataset.epoch = epoch
        return self.dataset[index]


@torch.no_grad()
def predict_scores(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 8,
                   num_workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid class scores and labels for every image of an InferenceDataset (full size, no augmentation)."""
    model.eval()
    loader = DataLoader(dataset, batch_sampler=dataset.batches(batch_size), collate_fn=collate_inference,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    channels_last = uses_channels_last(model, device)
    scores, labels = [], []
    with varied_input_sizes(device):
        for _, images, batch_labels in loader:
            with autocast(device):
                scores.append(torch.sigmoid(model(to_device(images, device, channels_last)).float()))
            labels.append(batch_labels)
    return torch.cat(scores).cpu().numpy(), torch.cat(labels).numpy()


def exact_match_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Share of images whose every class is right at score 0.5 (sklearn's ``accuracy_score`` on multi-label
    input, as mva-wsss's validation computes it on the rounded sigmoid scores)."""
    return float(np.mean(np.all((scores > 0.5) == (labels > 0.5), axis=1)))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes with at least one positive of the average precision (VOC classification mAP)."""
    # sklearn imported here: importing sklearn.metrics costs ~1.5 s, which every job that trains without validation
    # (AffinityNet, DeepLab) would pay for nothing
    from sklearn.metrics import average_precision_score

    present = labels.sum(0) > 0
    if not present.any():
        return float("nan")
    return float(np.mean(average_precision_score(labels[:, present], scores[:, present], average=None)))


SYNC_EVERY = 20  # steps between reads of the loss sums on a GPU (each read waits for the device)


@dataclass
class RunState:
    """One training run: what updates the model (fixed when :meth:`start` builds it) and where the run stands
    (the fields from ``epoch`` on, which :func:`train_one_epoch` and :func:`fit` advance).

    ``epoch`` is the epoch in progress (from 0) and ``done`` its finished batches; ``totals`` their summed
    losses, kept on the device in float64 so that adding to them never waits for it (:meth:`read_totals`
    waits); ``elapsed`` the seconds spent on those batches before a resume (a resumed epoch's logged time
    excludes the downtime); ``rows`` the logged epochs; ``best`` the best epoch so far under
    ``settings.select``: {"epoch", "score", "model": a CPU copy of its weights}. :meth:`state_dict` holds all of
    it with the optimizer, scheduler, GradScaler and RNG states: what a resume restores.
    """

    model: nn.Module
    settings: TrainSettings
    device: torch.device
    channels_last: bool  # whether input batches go channels-last (device.place_model)
    steps_per_epoch: int
    total_steps: int
    optimizer: torch.optim.SGD
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    loss_generator: torch.Generator = dataclasses.field(default_factory=torch.Generator)  # the BatchLoss's draws
    epoch: int = 0
    done: int = 0
    totals: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    elapsed: float = 0.0
    rows: list[dict] = dataclasses.field(default_factory=list)
    best: dict | None = None

    @classmethod
    def start(cls, model: nn.Module, train_size: int, settings: TrainSettings, device: torch.device) -> "RunState":
        """A run from epoch 0: the model on ``device``, SGD (:func:`build_optimizer`) with its poly schedule
        over the run's updates (or ``settings.poly_steps``) and loss scaling where AMP needs it."""
        channels_last = place_model(model, device)
        if train_size < settings.batch_size:
            raise ValueError(f"training set has {train_size} images, fewer than one batch of {settings.batch_size}")
        steps_per_epoch = train_size // settings.batch_size  # drop_last: BatchNorm dislikes tiny batches
        total_steps = settings.total_steps(steps_per_epoch)
        optimizer = build_optimizer(model, settings)
        scheduler = poly_schedule(optimizer, settings.poly_steps or total_steps, settings.poly_power,
                                  settings.warmup_steps)
        return cls(model, settings, device, channels_last, steps_per_epoch, total_steps, optimizer, scheduler,
                   grad_scaler(device))

    @property
    def epochs(self) -> int:
        """Epochs the run spans, ceil(total_steps / steps_per_epoch): ``max_steps`` may end the last one early."""
        return -(-self.total_steps // self.steps_per_epoch)

    @property
    def step(self) -> int:
        """Optimizer updates made so far."""
        return self.epoch * self.steps_per_epoch + self.done

    @property
    def epoch_batches(self) -> int:
        """Batches of the epoch in progress (all of it, the done ones included)."""
        return min(self.steps_per_epoch, self.total_steps - self.epoch * self.steps_per_epoch)

    @property
    def sync_every(self) -> int:
        """Updates between reads of the loss sums: every one on the CPU, where reading costs nothing."""
        return 1 if self.device.type == "cpu" else SYNC_EVERY

    def where(self) -> str:
        return (f"step {self.step}/{self.total_steps} "
                f"({f'{self.done} batches into' if self.done else 'start of'} epoch {self.epoch + 1})")

    def update(self, loss: torch.Tensor) -> None:
        """One SGD step on ``loss``: backward through the (AMP-scaled) loss, optional clipping of the global
        gradient norm, the step (skipped by the scaler if float16 gradients overflowed) and the lr schedule."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.settings.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the AMP-scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def add_losses(self, loss: torch.Tensor, parts: Mapping[str, torch.Tensor | float]) -> None:
        """Add a batch's loss and its parts to ``totals``, on the device: no wait for it here."""
        for key, value in {"loss": loss, **parts}.items():
            value = torch.as_tensor(value.detach() if torch.is_tensor(value) else value, dtype=torch.float64,
                                    device=self.device)
            self.totals[key] = self.totals[key] + value if key in self.totals else value

    def read_totals(self) -> dict[str, float]:
        """The summed losses on the host (one wait for the device); a non-finite one ends the run here."""
        values = {key: float(value) for key, value in self.totals.items()}
        if not np.isfinite(values.get("loss", 0.0)):
            raise FloatingPointError(f"training loss became {values['loss']} by {self.where()}")
        return values

    def end_epoch(self) -> None:
        self.epoch, self.done, self.totals, self.elapsed = self.epoch + 1, 0, {}, 0.0

    def state_dict(self, fingerprint: str) -> dict:
        return {"fingerprint": fingerprint, "epoch": self.epoch, "batch": self.done, "totals": self.read_totals(),
                "elapsed": self.elapsed, "rows": self.rows, "best": self.best, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "loss_generator": self.loss_generator.get_state(),
                "torch_rng": torch.get_rng_state(), "cuda_rng": _cuda_rng_state(self.device)}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict`: torch's global RNG (dropout) included, the totals back on the device."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.loss_generator.set_state(state["loss_generator"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state["cuda_rng"].numel():
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.rows, self.elapsed = list(state["rows"]), float(state["elapsed"])
        self.totals = {key: torch.tensor(value, dtype=torch.float64, device=self.device)
                       for key, value in state["totals"].items()}
        self.best = state["best"]
        self.epoch, self.done = int(state["epoch"]), int(state["batch"])

    def save(self, resume: ResumeSpec) -> None:
        save_torch_file(resume.path, self.state_dict(resume.fingerprint))
        # tqdm.write: a mid-epoch save happens under the progress bar, which would swallow a print's line start
        tqdm.write(f"saved resume state at {self.where()} to {resume.path}")


def fit(model: nn.Module, train_set: Dataset, val_set: Dataset | None, settings: TrainSettings,
        batch_loss: BatchLoss, device: torch.device, log_path: str | os.PathLike, resume: ResumeSpec | None = None,
        on_epoch_end: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` in place; write one CSV row per epoch to ``log_path``; return the rows.

    ``train_set`` serves ``train_set[index]`` with augmentation drawn from its ``epoch`` attribute, which the
    loop sets. A row holds the epoch's mean losses, the lr, the validation mAP and exact-match accuracy
    (every ``settings.val_every`` epochs and after the last), the seconds and ``data_wait``: the share of
    the epoch the loop spent waiting for batches (data loading that does not keep up with the model).

    With ``resume``, the state is saved at its interval and, if ``resume.path`` holds a state of this
    job from an interrupted run (time limit, preemption), training continues from it exactly as if
    it had not stopped: the epoch's sample order is rebuilt from its seed and the consumed batches
    are skipped unread, and the rest of :meth:`RunState.state_dict` is restored. On CPU the result is
    bitwise that of an uninterrupted run. The state is removed when training completes.

    With ``settings.select`` other than "last", the model ends with the weights of the epoch that
    scored best on the watched column (ties: the earliest; validation scores exist for validated epochs
    only), and ``early_stop_patience`` ends the run once that many epochs in a row have not beaten it.
    A non-finite loss stops the run with FloatingPointError: on the CPU before it reaches the weights,
    on a GPU at the next read of the loss sums.
    """
    run = RunState.start(model, len(train_set), settings, device)
    watched = SELECTIONS[settings.select]
    if watched and watched[0].startswith("val_") and val_set is None:
        raise ValueError(f"select {settings.select!r} scores epochs on validation images, but none were given")
    state = _read_resume_state(resume) if resume is not None else None
    if state is not None:
        run.load_state_dict(state)
        print(f"resuming from {resume.path} at {run.where()}", flush=True)
    autotune_before = torch.backends.cudnn.benchmark  # process-wide: restored for what runs next in this process
    loader, order, workers = _training_loader(train_set, settings, device)
    while run.epoch < run.epochs:
        started = time.time() - run.elapsed
        order.set_epoch(run.epoch, run.done * settings.batch_size, run.epoch_batches * settings.batch_size)
        train_set.epoch = run.epoch  # for a loader without workers, and for whoever reads it after the epoch
        row, data_wait = train_one_epoch(run, loader, batch_loss, started, resume)
        if val_set is not None and ((run.epoch + 1) % settings.val_every == 0 or run.epoch + 1 == run.epochs):
            row.update(evaluate(model, val_set, device, num_workers=workers))
        row["seconds"] = time.time() - started
        row["data_wait"] = data_wait
        if _log_and_select(run, row, log_path, on_epoch_end):
            break
        if resume is not None and resume.every_epochs and run.epoch % resume.every_epochs == 0 \
                and run.epoch < run.epochs:
            run.save(resume)
    torch.backends.cudnn.benchmark = autotune_before  # e.g. CAM inference on full-size images after training
    if run.best is not None:
        model.load_state_dict(run.best["model"])
        print(f"keeping epoch {run.best['epoch']}'s weights ({settings.select}: {watched[0]}="
              f"{run.best['score']:.4g})", flush=True)
    if resume is not None and Path(resume.path).exists():
        Path(resume.path).unlink()
    return run.rows


def train_one_epoch(run: RunState, loader: DataLoader, batch_loss: BatchLoss, started: float,
                    resume: ResumeSpec | None = None) -> tuple[dict, float]:
    """Train the rest of epoch ``run.epoch`` (all of it unless resumed mid-epoch), one :meth:`RunState.update`
    a batch, saving the state every ``resume.every_steps`` updates (the run's last excepted).

    Returns the epoch's row so far (epoch, mean losses, lr) and ``data_wait``, the share of its seconds since
    ``started`` (a time.time()) that the loop waited for batches. The batch-loss generator is seeded from
    ``epoch_seed(seed, epoch, "batch_loss")`` at the epoch's start; a resumed epoch continues the restored one.
    """
    settings, device = run.settings, run.device
    if run.done == 0:
        run.loss_generator.manual_seed(epoch_seed(settings.seed, run.epoch, "batch_loss"))
    set_train_mode(run.model, settings.freeze_bn)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed-size crops: one kernel search per shape
    progress = tqdm(loader, desc=f"epoch {run.epoch + 1}/{run.epochs}", initial=run.done, total=run.epoch_batches,
                    mininterval=10)
    waited, asked = 0.0, time.perf_counter()
    for images, labels in progress:
        waited += time.perf_counter() - asked
        images, labels = to_device(images, device, run.channels_last), to_device(labels, device)
        with autocast(device):
            loss, parts = batch_loss(run.model, images, labels, run.loss_generator)
        if run.sync_every == 1 and not torch.isfinite(loss):  # on the CPU: stop before a NaN reaches the weights
            raise FloatingPointError(f"training loss became {loss.item()} at epoch {run.epoch + 1}")
        run.update(loss)
        run.done += 1
        run.add_losses(loss, parts)
        if run.done % run.sync_every == 0:
            progress.set_postfix(loss=run.read_totals()["loss"] / run.done, refresh=False)
        if resume is not None and resume.every_steps and run.step % resume.every_steps == 0 \
                and run.step < run.total_steps:
            run.elapsed = time.time() - started
            run.save(resume)
        asked = time.perf_counter()
    seconds = time.time() - started
    row = {"epoch": run.epoch + 1, **{f"train_{k}": v / max(run.done, 1) for k, v in run.read_totals().items()},
           "lr": run.optimizer.param_groups[0]["lr"]}
    return row, waited / max(seconds, 1e-9)


def evaluate(model: nn.Module, val_set: Dataset, device: torch.device, num_workers: int = 0) -> dict[str, float]:
    """Validation scores of an epoch's row: mAP (:func:`mean_average_precision`) and exact-match accuracy."""
    scores, labels = predict_scores(model, val_set, device, num_workers=num_workers)
    return {"val_map": mean_average_precision(scores, labels), "val_accuracy": exact_match_accuracy(scores, labels)}


def _training_loader(train_set: Dataset, settings: TrainSettings,
                     device: torch.device) -> tuple[DataLoader, EpochOrder, int]:
    """The run's one loader (its workers persist across epochs), the sampler that :func:`fit` moves from epoch to
    epoch, and the number of workers (:func:`wsss_lib.device.loader_workers`)."""
    order = EpochOrder(len(train_set), settings.seed)
    workers = loader_workers(settings.num_workers, torch.get_num_threads(), device)
    loader = DataLoader(EpochItems(train_set), batch_size=settings.batch_size, drop_last=True, sampler=order,
                        num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                        # the loader draws its workers' base seed from this, not from torch's global RNG;
                        # augmentation does not use it (datasets seed each item from (seed, epoch, index))
                        generator=torch.Generator().manual_seed(epoch_seed(settings.seed, 0, "workers")))
    return loader, order, workers


def _log_and_select(run: RunState, row: dict, log_path: str | os.PathLike,
                    on_epoch_end: Callable[[dict], None] | None) -> bool:
    """Log the finished epoch's ``row``, keep its weights if it beats the best epoch under ``settings.select``,
    and move ``run`` to the next epoch; returns whether early stopping ends the run here."""
    settings, watched = run.settings, SELECTIONS[run.settings.select]
    run.rows.append(row)
    print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    _write_log(log_path, run.rows)
    if on_epoch_end is not None:
        on_epoch_end(row)
    best = run.best
    if watched and watched[0] in row and (best is None or _beats(row[watched[0]], best["score"], watched[1])):
        run.best = best = {"epoch": run.epoch + 1, "score": row[watched[0]],
                           "model": {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}}
    stale = best is not None and settings.early_stop_patience is not None and \
        run.epoch + 1 - best["epoch"] >= settings.early_stop_patience
    run.end_epoch()
    if stale:
        print(f"early stop after epoch {run.epoch}: {watched[0]} has not beaten epoch {best['epoch']}'s "
              f"{best['score']:.4g} for {settings.early_stop_patience} epochs", flush=True)
    return stale


def _beats(score: float, best: float, higher_is_better: bool) -> bool:
    """Strictly better (a tie keeps the earlier epoch, as Lightning's ModelCheckpoint and SC-CAM's `<` do)."""
    return score > best if higher_is_better else score < best


_STATE_KEYS = frozenset({"fingerprint", "epoch", "batch", "totals", "elapsed", "rows", "best", "model", "optimizer",
                         "scheduler", "scaler", "loss_generator", "torch_rng", "cuda_rng"})


def _read_resume_state(resume: ResumeSpec) -> dict | None:
    """The state at ``resume.path`` if it is this job's; otherwise None, with the file removed and a
    log line saying why (a state of other params, code or inputs must never be continued silently)."""
    path = Path(resume.path)
    if not path.is_file():
        return None
    try:
        state = load_torch_file(path, "resume state")
        if not isinstance(state, dict):
            reason = f"it holds a {type(state).__name__}, not a resume state"
        elif missing := sorted(_STATE_KEYS - set(state)):
            reason = f"it lacks {', '.join(missing)}"
        else:
            reason = None
    except Exception as err:  # torch raises several types for truncated, corrupt or pickled files
        reason = f"it cannot be read ({type(err).__name__}: {err})"
    if reason is None and state["fingerprint"] != resume.fingerprint:
        reason = (f"it was saved by a job with fingerprint {state['fingerprint']}, this job's is "
                  f"{resume.fingerprint} (its params, code or inputs changed)")
    if reason is None:
        return state
    print(f"discarding resume state {path}: {reason}; training from scratch", flush=True)
    path.unlink()
    return None


def _cuda_rng_state(device: torch.device) -> torch.Tensor:
    """The CUDA generator's state on a CUDA device (dropout draws from it there); empty on CPU."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.empty(0, dtype=torch.uint8)


def _write_log(path: str | os.PathLike, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
