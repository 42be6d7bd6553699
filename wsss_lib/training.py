"""The one training loop shared by every classifier method.

Methods differ only in the ``BatchLoss`` they plug in (mixing strategy, extra loss terms, extra
heads); the loop owns optimisation (SGD with poly decay and a larger learning rate on new layers,
as in PSA / IRN; optional gradient-norm clipping), AMP on CUDA, per-epoch logging with validation
mAP and accuracy, the choice of which epoch's weights to keep (with early stopping), and resumable state.

On a GPU the loop does not wait on the device between steps: loss values are summed on the device and
read back every ``SYNC_EVERY`` steps (every step on the CPU, where reading costs nothing), batches come
from pinned memory with non-blocking copies, convolutional nets run channels-last, and cuDNN picks its
kernels for the fixed crop size. The data loader and its workers persist across epochs.
"""

from __future__ import annotations

import contextlib
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
    """Where and how often :func:`train_classifier` saves the state it resumes from, and whose state it is.

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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


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


def train_classifier(model: nn.Module, train_set: Dataset, val_set: Dataset | None, settings: TrainSettings,
                     batch_loss: BatchLoss, device: torch.device, log_path: str | os.PathLike,
                     resume: ResumeSpec | None = None,
                     on_epoch_end: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` in place; write one CSV row per epoch to ``log_path``; return the rows.

    ``train_set`` serves ``train_set[index]`` with augmentation drawn from its ``epoch`` attribute, which the
    loop sets. A row holds the epoch's mean losses, the lr, the validation mAP and exact-match accuracy
    (every ``settings.val_every`` epochs and after the last), the seconds and ``data_wait``: the share of
    the epoch the loop spent waiting for batches (data loading that does not keep up with the model).

    With ``resume``, the state is saved at its interval and, if ``resume.path`` holds a state of this
    job from an interrupted run (time limit, preemption), training continues from it exactly as if
    it had not stopped: the epoch's sample order is rebuilt from its seed and the consumed batches
    are skipped unread, and the batch-loss generator, torch's global RNG (dropout), the partial
    epoch's loss sums, the model / optimizer / scheduler / GradScaler states and the best epoch's
    weights so far are restored. On CPU the result is bitwise that of an uninterrupted run. The state
    is removed when training completes.

    With ``settings.select`` other than "last", the model ends with the weights of the epoch that
    scored best on the watched column (ties: the earliest; validation scores exist for validated epochs
    only), and ``early_stop_patience`` ends the run once that many epochs in a row have not beaten it.
    A non-finite loss stops the run with FloatingPointError: on the CPU before it reaches the weights,
    on a GPU at the next read of the loss sums.
    """
    channels_last = place_model(model, device)
    if len(train_set) < settings.batch_size:
        raise ValueError(f"training set has {len(train_set)} images, fewer than one batch of {settings.batch_size}")
    steps_per_epoch = len(train_set) // settings.batch_size  # drop_last: BatchNorm dislikes tiny batches
    optimizer = build_optimizer(model, settings)
    total_steps = settings.total_steps(steps_per_epoch)
    epochs = -(-total_steps // steps_per_epoch)
    scheduler = poly_schedule(optimizer, settings.poly_steps or total_steps, settings.poly_power, settings.warmup_steps)
    watched = SELECTIONS[settings.select]
    if watched and watched[0].startswith("val_") and val_set is None:
        raise ValueError(f"select {settings.select!r} scores epochs on validation images, but none were given")
    # float16 overflows without loss scaling; bfloat16 has float32's range (the scaler is then a no-op)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
    sync_every = 1 if device.type == "cpu" else SYNC_EVERY
    loss_generator = torch.Generator()
    # Where training stands: the epoch in progress, its finished batches, their summed losses and the
    # seconds spent on them (a resumed epoch's logged time excludes the downtime), the logged rows, and the
    # best epoch so far under `select` ({"epoch", "score", "model": a CPU copy of its weights}).
    rows: list[dict] = []
    epoch, done, totals, elapsed, best = 0, 0, {}, 0.0, None

    def where() -> str:
        step = epoch * steps_per_epoch + done
        return f"step {step}/{total_steps} ({f'{done} batches into' if done else 'start of'} epoch {epoch + 1})"

    def read_totals() -> dict[str, float]:
        """The summed losses on the host (one wait for the device); a non-finite one ends the run here."""
        values = {key: float(value) for key, value in totals.items()}
        if not np.isfinite(values.get("loss", 0.0)):
            raise FloatingPointError(f"training loss became {values['loss']} by {where()}")
        return values

    def save() -> None:
        save_torch_file(resume.path, {
            "fingerprint": resume.fingerprint, "epoch": epoch, "batch": done, "totals": read_totals(),
            "elapsed": elapsed, "rows": rows, "best": best, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "loss_generator": loss_generator.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": _cuda_rng_state(device)})
        # tqdm.write: a mid-epoch save happens under the progress bar, which would swallow a print's line start
        tqdm.write(f"saved resume state at {where()} to {resume.path}")

    state = _read_resume_state(resume) if resume is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        loss_generator.set_state(state["loss_generator"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state["cuda_rng"].numel():
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        rows, elapsed = list(state["rows"]), float(state["elapsed"])
        totals = {key: torch.tensor(value, dtype=torch.float64, device=device) for key, value in state["totals"].items()}
        best = state["best"]
        epoch, done = int(state["epoch"]), int(state["batch"])
        print(f"resuming from {resume.path} at {where()}", flush=True)

    autotune_before = torch.backends.cudnn.benchmark  # process-wide: restored for what runs next in this process
    order = EpochOrder(len(train_set), settings.seed)
    workers = loader_workers(settings.num_workers, torch.get_num_threads(), device)
    loader = DataLoader(EpochItems(train_set), batch_size=settings.batch_size, drop_last=True, sampler=order,
                        num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                        # the loader draws its workers' base seed from this, not from torch's global RNG;
                        # augmentation does not use it (datasets seed each item from (seed, epoch, index))
                        generator=torch.Generator().manual_seed(epoch_seed(settings.seed, 0, "workers")))
    while epoch < epochs:
        started = time.time() - elapsed
        if done == 0:
            loss_generator.manual_seed(epoch_seed(settings.seed, epoch, "batch_loss"))
        batches = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)  # max_steps may end mid-epoch
        order.set_epoch(epoch, done * settings.batch_size, batches * settings.batch_size)
        train_set.epoch = epoch  # for a loader without workers, and for whoever reads it after the epoch
        set_train_mode(model, settings.freeze_bn)
        torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed-size crops: one kernel search per shape
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", initial=done, total=batches, mininterval=10)
        waited, asked = 0.0, time.perf_counter()
        for images, labels in progress:
            waited += time.perf_counter() - asked
            images, labels = to_device(images, device, channels_last), to_device(labels, device)
            with autocast(device):
                loss, parts = batch_loss(model, images, labels, loss_generator)
            if sync_every == 1 and not torch.isfinite(loss):  # on the CPU: stop before a NaN reaches the weights
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if settings.grad_clip_norm is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the AMP-scaled ones
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            done += 1
            for key, value in {"loss": loss, **parts}.items():  # summed on the device: no wait for it here
                value = torch.as_tensor(value.detach() if torch.is_tensor(value) else value, dtype=torch.float64,
                                        device=device)
                totals[key] = totals[key] + value if key in totals else value
            if done % sync_every == 0:
                progress.set_postfix(loss=read_totals()["loss"] / done, refresh=False)
            step = epoch * steps_per_epoch + done
            if resume is not None and resume.every_steps and step % resume.every_steps == 0 and step < total_steps:
                elapsed = time.time() - started
                save()
            asked = time.perf_counter()
        seconds = time.time() - started
        row = {"epoch": epoch + 1, **{f"train_{k}": v / max(done, 1) for k, v in read_totals().items()},
               "lr": optimizer.param_groups[0]["lr"]}
        if val_set is not None and ((epoch + 1) % settings.val_every == 0 or epoch + 1 == epochs):
            scores, labels = predict_scores(model, val_set, device, num_workers=workers)
            row["val_map"] = mean_average_precision(scores, labels)
            row["val_accuracy"] = exact_match_accuracy(scores, labels)
        row["seconds"] = time.time() - started
        row["data_wait"] = waited / max(seconds, 1e-9)
        rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        _write_log(log_path, rows)
        if on_epoch_end is not None:
            on_epoch_end(row)
        if watched and watched[0] in row and (best is None or _beats(row[watched[0]], best["score"], watched[1])):
            best = {"epoch": epoch + 1, "score": row[watched[0]],
                    "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        stale = best is not None and settings.early_stop_patience is not None and \
            epoch + 1 - best["epoch"] >= settings.early_stop_patience
        epoch, done, totals, elapsed = epoch + 1, 0, {}, 0.0
        if stale:
            print(f"early stop after epoch {epoch}: {watched[0]} has not beaten epoch {best['epoch']}'s "
                  f"{best['score']:.4g} for {settings.early_stop_patience} epochs", flush=True)
            break
        if resume is not None and resume.every_epochs and epoch % resume.every_epochs == 0 and epoch < epochs:
            save()
    torch.backends.cudnn.benchmark = autotune_before  # e.g. CAM inference on full-size images after training
    if best is not None:
        model.load_state_dict(best["model"])
        print(f"keeping epoch {best['epoch']}'s weights ({settings.select}: {watched[0]}={best['score']:.4g})",
              flush=True)
    if resume is not None and Path(resume.path).exists():
        Path(resume.path).unlink()
    return rows


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
