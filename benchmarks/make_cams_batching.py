"""make_cams: batched test-time views vs one forward per view (as mva-wsss does).

Both variants use the same model, images, scales and flips and produce the same CAMs (checked).
Reports images/s of each, their ratio, and the share of the real make_cams stage spent outside
the network forward (image decoding, normalisation, resizing, HDF5 writes).

    .venv/bin/python benchmarks/make_cams_batching.py --source voc --backbone efficientnet_lite0 --images 12
    .venv/bin/python benchmarks/make_cams_batching.py --source synthetic --backbone small_cnn --images 64 --batch 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from wsss_lib.cams import multiscale_cams, normalise_by_max
from wsss_lib.data.synthetic import class_names as synthetic_class_names, generate_synthetic
from wsss_lib.data.voc import VOC_CLASSES, build_split_table, find_voc_root
from wsss_lib.data.datasets import InferenceDataset
from wsss_lib.models.cam_net import CAMNet, build_cam_net
from wsss_lib.models.registry import save_network
from wsss_lib.stages.cam import make_cams

VOC_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "voc_sample"
SCALES = (1.0, 0.5, 1.5, 2.0)


def per_view_cams(model, image: torch.Tensor, scales=SCALES) -> torch.Tensor:
    """Reference: one forward per (scale, flip) view of one image."""
    height, width = image.shape[-2:]
    total = 0
    for scale in scales:
        for flip in (False, True):
            view = image.flip(-1) if flip else image
            if scale != 1.0:
                view = F.interpolate(view, size=(round(height * scale), round(width * scale)), mode="bilinear")
            cam = model.cams(view)
            cam = cam.flip(-1) if flip else cam
            total = total + F.interpolate(cam, size=(height, width), mode="bilinear")
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", choices=["voc", "synthetic"], default="voc")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    work = tempfile.TemporaryDirectory()
    if args.source == "voc":
        class_names = list(VOC_CLASSES)
        table = build_split_table(find_voc_root(VOC_SAMPLE), "train", class_names).head(args.images)
    else:  # 128 px synthetic images: the CPU demo's regime
        class_names = synthetic_class_names(5)
        generate_synthetic(Path(work.name) / "syn", n_train=args.images, n_train_aug=args.images, n_val=1,
                           image_size=128, n_classes=5, seed=0)
        table = build_split_table(Path(work.name) / "syn", "train", class_names)
    build_args = {"backbone": args.backbone, "n_classes": len(class_names),
                  "output_stride": 16 if args.backbone != "small_cnn" else 8}
    model = build_cam_net(**build_args).eval()
    dataset = InferenceDataset(table, model.backbone.input_mean, model.backbone.input_std)

    with torch.no_grad():
        # correctness first: both give the same CAMs on one image
        _, image, _ = dataset[0]
        _, batched = multiscale_cams(model, image[None], SCALES, flip=True)
        torch.testing.assert_close(batched, per_view_cams(model, image[None]), rtol=1e-3, atol=1e-3)

        started = time.perf_counter()
        for i in range(len(dataset)):
            _, image, _ = dataset[i]
            normalise_by_max(per_view_cams(model, image[None]))
        per_view_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        csv = tmp / "split.csv"
        table.to_csv(csv, index=False)
        save_network(tmp / "model.pt", model, architecture="cam_net", build_args=build_args, class_names=class_names,
                     method="bench", config_hash="-", input_mean=list(model.backbone.input_mean),
                     input_std=list(model.backbone.input_std))
        forward_s = 0.0
        original = CAMNet.cams

        def timed_cams(self, x):
            nonlocal forward_s
            t = time.perf_counter()
            out = original(self, x)
            forward_s += time.perf_counter() - t
            return out

        CAMNet.cams = timed_cams
        hp = {"make_cams": {"scales": list(SCALES), "flip": True, "strided_stride": 4, "batch_size": args.batch,
                            "num_workers": 0}}
        started = time.perf_counter()
        make_cams(str(tmp / "model.pt"), str(csv), str(tmp / "cams.h5"), hp, device="cpu", threads=args.threads)
        batched_s = time.perf_counter() - started
        CAMNet.cams = original

    n = len(dataset)
    print(f"backbone {args.backbone}, {n} {args.source} images, scales {SCALES} x flip, {args.threads} threads, "
          f"batch {args.batch}")
    print(f"one forward per view : {n / per_view_s:6.2f} images/s ({per_view_s:.1f} s)")
    print(f"batched make_cams    : {n / batched_s:6.2f} images/s ({batched_s:.1f} s)")
    print(f"speed-up             : {per_view_s / batched_s:.2f}x")
    print(f"make_cams time outside the network forward: {100 * (1 - forward_s / batched_s):.1f}% "
          f"({batched_s - forward_s:.1f} s of {batched_s:.1f} s)")


if __name__ == "__main__":
    main()
