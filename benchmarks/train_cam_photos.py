"""CAM training on real photos: images per second of the production train_cam on a VOC-layout root.

Builds the split tables of ``--root`` (wsss_lib.data.voc.build_split_table, as the workflow's split job
does), then trains one method's CAM classifier with the production stage function and its effective VOC
config (config/config.yaml, each --configfile merged over it, ``dataset: voc12``), with only the backbone,
its initialisation (random weights train their BatchNorm, as in gpu_stages.py), the number of epochs and
validation after each epoch overridden. For each epoch it prints the training images,
seconds, images per second (the training loop's clock, validation included as production runs it), the
share of the epoch spent waiting for data, the validation mAP where the epoch validated, and the peak GPU
memory. On CUDA the loop trains under autocast (bfloat16 where the GPU supports it, float16 with a
GradScaler otherwise: wsss_lib.device.amp_dtype), channels-last and with cuDNN autotuning for the
fixed crop.

Issue 11's GPU check, on the VOC sample with ResNet-50 from random weights (nothing can be fetched there):

    python3 benchmarks/train_cam_photos.py --root ../shared/voc_sample --configfile config/voc_sample.yaml \
        --backbone resnet50 --pretrained none --epochs 1 --device cuda

Like gpu_stages.py, it puts this checkout first on sys.path, so it runs with wsss_lib from the tree on a
host whose python3 has its own torch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_stages import RANDOM_INIT, configured_hparams  # noqa: E402
from wsss_lib.classes import VOC_CLASSES  # noqa: E402
from wsss_lib.config import deep_merge  # noqa: E402
from wsss_lib.data.voc import build_split_table  # noqa: E402
from wsss_lib.device import amp_dtype, resolve_device  # noqa: E402
from wsss_lib.report import write_json  # noqa: E402
from wsss_lib.stages.cam import train_cam  # noqa: E402


def run(root: Path, work: Path, hp: dict, *, device: str, threads: int) -> dict:
    """Split tables of ``root``, then train_cam on the configured split, validated on val."""
    split = hp["train_cam"]["split"]
    tables, train_images = {}, 0
    for name in dict.fromkeys([split, "val"]):
        table = build_split_table(root, name, VOC_CLASSES)
        tables[name] = work / f"{name}.csv"
        table.to_csv(tables[name], index=False)
        train_images = len(table) if name == split else train_images
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    started = time.perf_counter()
    rows = train_cam(str(tables[split]), str(tables["val"]), str(work / "model.pt"), str(work / "log.csv"), hp,
                     device=device, threads=threads, method="benchmark")
    wall = time.perf_counter() - started
    batch = hp["train_cam"]["batch_size"]
    per_epoch = (train_images // batch) * batch  # the loader drops the last partial batch
    epochs = [{"epoch": row["epoch"], "images": per_epoch, "seconds": row["seconds"],
               "images_per_second": per_epoch / row["seconds"], "data_wait": row["data_wait"],
               "val_map": row.get("val_map")} for row in rows]
    return {
        "epochs": epochs,
        "call_seconds": wall,
        "peak_gpu_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "settings": {"root": str(root), "split": split, "train_images": train_images, "backbone": hp["backbone"],
                     "pretrained": hp["pretrained"], "freeze_bn": hp["train_cam"]["freeze_bn"],
                     "output_stride": hp["output_stride"],
                     "crop": hp["train_cam"]["crop"], "batch_size": batch, "device": str(dev),
                     "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
                     "autocast": str(amp_dtype(dev)) if dev.type == "cuda" else None,
                     "torch": torch.__version__, "threads": threads},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="a VOC2012-layout root, or the folder holding VOC2012/")
    parser.add_argument("--method", default="baseline")
    parser.add_argument("--configfile", action="append", default=[], help="merged over config/config.yaml")
    parser.add_argument("--backbone", help="override the configured backbone, e.g. resnet50")
    parser.add_argument("--pretrained", help="override the configured initialisation, e.g. none")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=4, help="torch CPU threads (the SLURM profile's 4)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)

    root = Path(args.root)
    if (root / "VOC2012").is_dir():
        root = root / "VOC2012"
    hp = configured_hparams(args.method, args.configfile)
    overrides = {"train_cam": {"epochs": args.epochs, "val_every": 1}}
    if args.backbone:
        overrides["backbone"] = args.backbone
    if args.pretrained:
        overrides["pretrained"] = args.pretrained
    if args.pretrained == "none":  # BatchNorm trains with random weights (gpu_stages.RANDOM_INIT says why)
        overrides["train_cam"]["freeze_bn"] = RANDOM_INIT["train_cam"]["freeze_bn"]
    hp = deep_merge(hp, overrides)
    with tempfile.TemporaryDirectory() as scratch:
        result = run(root, Path(scratch), hp, device=args.device, threads=args.threads)
    s = result["settings"]
    print(f"train_cam of {args.method!r} on {s['root']} ({s['split']}, {s['train_images']} photos): {s['backbone']} "
          f"OS{s['output_stride']} from {s['pretrained']}, crop {s['crop']}, batch {s['batch_size']}, on "
          f"{s['device']} ({s['gpu'] or 'CPU'}), autocast {s['autocast']}, torch {s['torch']}")
    for row in result["epochs"]:
        val = "" if row["val_map"] is None else f", val mAP {row['val_map']:.3f}"
        print(f"  epoch {row['epoch']}: {row['images']} images in {row['seconds']:.1f} s "
              f"({row['images_per_second']:.1f} img/s, validation included), data wait {row['data_wait']:.0%}{val}")
    if result["peak_gpu_mb"] is not None:
        print(f"  peak GPU memory {result['peak_gpu_mb']:.0f} MB")
    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
