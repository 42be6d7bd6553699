"""train_cam's training throughput against a bare forward + backward loop of the same network, batch and crop.

The production side is what the train_cam job runs (wsss_lib.stages.cam): its dataset, augmentation, batch
loss and the shared training loop with its data loader, over ``--epochs`` epochs without validation. The bare
side trains a fresh copy of the same network on one fixed random batch already in memory: the speed of the
network alone. Their ratio is the share of the network's pace that the pipeline keeps; ``data_wait`` is the
share of each epoch the loop spent waiting for a batch.

    .venv/bin/python benchmarks/train_throughput.py --backbone small_cnn --crop 128 --batch 16 --synthetic 128
    .venv/bin/python benchmarks/train_throughput.py --backbone efficientnet_lite0 --pretrained imagenet \\
        --crop 320 --batch 8 --voc-root ../shared/voc_sample --split train_aug --resize-long 256 400

Threads: the run gets ``--threads`` (as a Snakemake job of that many threads does) and as many loader workers
as the loop gives a job of that size (wsss_lib.device.loader_workers), or ``--workers`` to force a number.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsss_lib.classes import VOC_CLASSES
from wsss_lib.data.datasets import ClassificationDataset
from wsss_lib.data.synthetic import class_names, generate_synthetic
from wsss_lib.data.voc import build_split_table, find_voc_root
from wsss_lib.models.cam_net import build_cam_net
from wsss_lib.objectives import Objective, build_batch_loss
from wsss_lib.stages.cam import train_transform
from wsss_lib import training
from wsss_lib.training import TrainSettings, build_optimizer, fit, set_train_mode


def bare_loop(model, batch: int, crop: int, n_classes: int, steps: int, settings: TrainSettings) -> float:
    """Images per second of forward + multi-label loss + backward + SGD step on one fixed in-memory batch."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, crop, crop, generator=generator)
    labels = (torch.rand(batch, n_classes, generator=generator) < 0.3).float()
    optimizer = build_optimizer(model, settings)
    set_train_mode(model, settings.freeze_bn)

    def step():
        loss = F.multilabel_soft_margin_loss(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up: allocator, first-call overheads
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--output-stride", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resize-long", type=int, nargs=2, default=None, help="default: crop * (7/8, 9/8)")
    parser.add_argument("--synthetic", type=int, metavar="SIZE", help="synthetic images of this size")
    parser.add_argument("--images", type=int, default=240, help="synthetic training images")
    parser.add_argument("--voc-root", help="a VOC-layout tree instead of synthetic images")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images of the VOC split")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="default: the loop's choice (loader_workers)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workers = training.loader_workers(1, args.threads, torch.device("cpu"))
    if args.workers is not None:
        workers = args.workers
        training.loader_workers = lambda configured, threads, device: args.workers

    with tempfile.TemporaryDirectory() as tmp:
        if args.voc_root:
            names = list(VOC_CLASSES)
            table = build_split_table(find_voc_root(args.voc_root), args.split, names)[:args.limit]
        else:
            names = class_names(5)
            generate_synthetic(Path(tmp), n_train=args.images, n_train_aug=args.images, n_val=1,
                               image_size=args.synthetic or args.crop, n_classes=5, seed=0)
            table = build_split_table(Path(tmp), "train", names)
        resize = args.resize_long or [args.crop * 7 // 8, args.crop * 9 // 8]
        opts = {"crop": args.crop, "resize_long": resize, "hflip": True, "color_jitter": [0.3, 0.3, 0.3, 0.1]}
        settings = TrainSettings(epochs=args.epochs, batch_size=args.batch, lr=0.01, weight_decay=1e-4, momentum=0.9,
                                 poly_power=0.9, new_layer_lr_mult=10, freeze_bn=args.pretrained != "none",
                                 num_workers=1)
        torch.manual_seed(0)
        model = build_cam_net(args.backbone, len(names), args.pretrained, args.output_stride)
        dataset = ClassificationDataset(table, train_transform(opts, model.backbone.input_mean,
                                                               model.backbone.input_std))
        rows = fit(model, dataset, None, settings, build_batch_loss(Objective()), torch.device("cpu"),
                   Path(tmp) / "log.csv")
        steps = len(dataset) // args.batch
        steady = rows[1:] or rows  # the first epoch also starts the loader's worker
        pipeline = steps * args.batch * len(steady) / sum(row["seconds"] for row in steady)
        torch.manual_seed(0)
        fresh = build_cam_net(args.backbone, len(names), args.pretrained, args.output_stride)
        bare = bare_loop(fresh, args.batch, args.crop, len(names), steps, settings)
    wait = np.mean([row["data_wait"] for row in steady])
    print(f"{args.backbone} crop {args.crop} batch {args.batch}, {len(dataset)} images, {args.threads} threads, "
          f"{workers} loader workers")
    print(f"  train_cam loop: {pipeline:.1f} img/s (epochs 2-{args.epochs}; first epoch {rows[0]['seconds']:.1f} s)"
          f"; waiting for data {100 * wait:.1f}% of each epoch")
    print(f"  bare loop:      {bare:.1f} img/s")
    print(f"  ratio:          {pipeline / bare:.2f}")


if __name__ == "__main__":
    main()
