"""Throughput of every GPU stage of one method, extrapolated to a full PASCAL VOC 2012 run.

Runs the production stage functions of wsss_lib in the workflow's order, each on the previous one's real
output, over synthetic VOC-sized images (500x375 JPEGs rendered by wsss_lib.data.synthetic.render_image,
20 VOC classes) with randomly initialised networks (nothing is downloaded):

    train_cam -> make_cams -> crf_labels (CPU process pool) -> train_affinity -> random_walk
              -> train_deeplab -> infer_deeplab

The hyper-parameters are the method's effective VOC config: config/config.yaml (plus any --configfile
merged over it, as Snakemake merges them) with ``dataset: voc12``, through wsss_lib.config.method_config.
Only four things are overridden: ``pretrained: none`` (CAM / AffinityNet backbone and DeepLab), BatchNorm
trained rather than frozen (frozen statistics are the pretrained ones, which random weights lack), the
number of epochs / iterations (a short timed run), and, with --tiny, the sizes below. For each stage it prints
the images timed, their wall seconds, images per second, the peak GPU memory, and the stage's extrapolated
wall time on full VOC: the configured epochs over the configured split (train 1,464 or train_aug 10,582),
DeepLab's configured iterations x batch, and the 1,449 val images, at the measured rate.

Which values those are is the config's call, not this script's. For ``baseline`` (protocol mva_wsss) the CAM
net trains at crop 300, batch 8, for 15 epochs on train (1,464 images), not IRN's crop 512, batch 16 on
train_aug that ``defaults`` holds; ``--configfile config/train_aug.yaml`` moves it to train_aug. The
full-VOC time of train_cam counts every configured epoch: an early stop (``early_stop_patience``) can only
shorten it. The table's settings lines say what was run and what was extrapolated.

    .venv/bin/python benchmarks/gpu_stages.py [--method baseline] [--json gpu_stages.json]
    .venv/bin/python benchmarks/gpu_stages.py --configfile config/train_aug.yaml   # CAM net on train_aug
    .venv/bin/python benchmarks/gpu_stages.py --tiny --device cpu                  # CPU-sized, for the test

What is timed (one-off startup is excluded where the stage allows it):

* Training stages (train_cam, train_affinity, train_deeplab) run 1 + --epochs epochs (DeepLab: its
  iterations set to that many passes over the images). Epoch 1 is the warm-up: it starts the loader's
  worker, allocates the device's memory pool and lets cuDNN pick its kernels for the fixed crop. The
  timed part is the training loop's own clock for epochs 2 onwards (wsss_lib.training.fit's
  per-epoch ``seconds``, read after the loop has waited for the device), so building the net and saving
  it are not counted either.
  Images timed = steps x batch. train_cam's epochs include their validation pass (``val_every``), as
  production's do; its val set is sized so that validation costs the share of an epoch that VOC val
  (1,449 images) costs next to the CAM training split.
* The other stages first run untimed on a few images (CUDA context, cuSPARSE / cuDNN handles, lazily
  loaded kernels), then on all images, timed with time.perf_counter around the stage call, after
  torch.cuda.synchronize() on a GPU. Loading the model and opening the stores stay in, as they do once
  per stage in production; their share shrinks with more images (--images).
* crf_labels runs on the CPU in a pool of --cpu-processes (default: the machine's cores) processes, as
  the crf_labels job runs on its threads; its full-VOC time is the measured images per second of that
  pool on 10,582 images. infer_deeplab includes the configured dense CRF (segment.infer.crf) on the same
  number of processes, which is part of that stage's cost.
* Each stage starts with cuDNN autotuning off, as it is in a fresh process: the workflow runs each stage
  as its own job, and the training loop leaves the switch on behind it.

The images all share one size, so make_cams always fills its batches; real VOC photos come in a few
sizes, which makes some of its batches smaller.

Running it on a machine whose python3 has its own torch and torchvision (e.g. a GPU host with no
internet): the script puts this checkout first on sys.path, so wsss_lib comes from the tree and needs no
install. wsss_lib needs torch >= 2.3 (device.py builds ``torch.amp.GradScaler("cuda")``) and torchvision
>= 0.13 (backbones.py names its weights enums at import). The stages import, at module level, numpy,
Pillow, pandas, h5py, scikit-learn (training.py's mAP; it brings scipy, joblib and threadpoolctl), tqdm
and torchvision; the CRF of crf_labels and infer_deeplab imports pydensecrf (wheel: pydensecrf2) in its
workers; this script reads the config with PyYAML. finch-clust (sub-category clustering) is not needed.
Check the host with ``python3 -c "import numpy, PIL, pandas, h5py, sklearn, tqdm, yaml, pydensecrf"`` and
carry the wheels of the modules that fail only (an ML image usually lacks pydensecrf2 alone), fetched
where pip has an index for the host's Python and platform, e.g.

    pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
        -d wheels pydensecrf2==1.1

and installed there with ``python3 -m pip install --no-index --no-deps --target /tmp/site wheels/*.whl``,
then ``PYTHONPATH=/tmp/site python3 benchmarks/gpu_stages.py``. Carry no numpy: the host's torch is built
against its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Run as a script, sys.path[0] is benchmarks/; put the checkout first so this tree's wsss_lib is
# imported (the venv's editable install may point at another checkout, and a GPU host has none).
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wsss_lib.classes import VOC_CLASSES  # noqa: E402
from wsss_lib.config import deep_merge, method_config  # noqa: E402
from wsss_lib.data.label_png import write_label_png  # noqa: E402
from wsss_lib.data.synthetic import render_image  # noqa: E402
from wsss_lib.data.voc import build_split_table  # noqa: E402
from wsss_lib.device import loader_workers, resolve_device  # noqa: E402
from wsss_lib.report import write_json  # noqa: E402
from wsss_lib.stages.cam import make_cams, train_cam  # noqa: E402
from wsss_lib.stages.refine import crf_labels, random_walk, train_affinity  # noqa: E402
from wsss_lib.stages.segment import infer_deeplab, train_deeplab  # noqa: E402

CONFIG = REPO / "config" / "config.yaml"

# Full PASCAL VOC 2012 split sizes, as profiles/slurm/config.yaml sizes its jobs (and wsss_lib/stages/data.py
# builds train_aug: SBD train + SBD val + VOC train, minus VOC val).
VOC_SPLIT_IMAGES = {"train": 1464, "train_aug": 10582, "val": 1449}

VOC_IMAGE_SIZE = (500, 375)  # (width, height): the most common size of a VOC 2012 photo
TINY_IMAGE_SIZE = (64, 48)

TRAINING_STAGES = ("train_cam", "train_affinity", "train_deeplab")

# Random weights for every net, and BatchNorm in training mode with them. The configured nets keep their
# pretrained BN statistics frozen (IRN, DeepLab-v2); frozen at init (mean 0, variance 1) they normalise
# nothing, and a random ResNet-101 then puts out logits of ~2e5 that turned DeepLab's loss to NaN within its
# first epoch (seen on an H200). Batch statistics cost about what the frozen affine map does next to the
# convolutions, so the timing is unaffected.
RANDOM_INIT = {"pretrained": "none", "train_cam": {"freeze_bn": False}, "refine": {"affinity": {"freeze_bn": False}},
               "segment": {"pretrained": "none", "freeze_bn": False}}

# --tiny: what a CPU can train in seconds. small_cnn (wsss_lib/models/backbones.py) for all three nets,
# crops and batches to fit 64x48 images; everything else keeps its configured value.
TINY_HPARAMS = {
    "backbone": "small_cnn",
    "train_cam": {"crop": 48, "resize_long": [48, 80], "batch_size": 4},
    "refine": {"affinity": {"crop": 48, "batch_size": 4}},
    "segment": {"backbone": "small_cnn", "crop": 48, "batch_size": 4},
}

TABLE_COLUMNS = ("stage", "device", "images", "seconds", "img/s", "peak_GPU_MB", "full_VOC_images", "full_VOC_h")


def machine_cores() -> int:
    """CPU cores this process may use: os.cpu_count(), narrowed to the affinity mask where Linux sets one
    (a container or batch job often sees more cores than it is given)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def configured_hparams(method: str, config_files: list[str | os.PathLike]) -> dict:
    """The method's effective hyper-parameters on VOC: config/config.yaml, each extra file merged over it
    (as Snakemake merges --configfile), ``dataset: voc12``, then wsss_lib.config.method_config."""
    import yaml  # only here: the stages themselves need no PyYAML

    config: dict = {}
    for path in [CONFIG, *config_files]:
        config = deep_merge(config, yaml.safe_load(Path(path).read_text()))
    config["dataset"] = "voc12"
    return method_config(config, method)


def covered_voc_images(splits: list[str]) -> int:
    """Images in the union of VOC splits: train lies inside train_aug, val is disjoint from both."""
    names = set(splits)
    if "train_aug" in names:
        names.discard("train")
    return sum(VOC_SPLIT_IMAGES[name] for name in names)


def full_voc_workload(configured: dict) -> dict[str, int]:
    """Images each stage processes in a full VOC run of the configured method, splits chosen as
    rules/common.smk chooses them: the CAM net learns from train_cam.split for its epochs; CAMs and the
    walk cover the CAM evaluation split and the pseudo-label split; the CRF labels and AffinityNet use
    the pseudo-label split (segment.split); DeepLab runs iterations x batch and predicts segment.infer.split."""
    cam, affinity, segment = configured["train_cam"], configured["refine"]["affinity"], configured["segment"]
    cams_and_walk = covered_voc_images([configured["eval_cams"]["split"], segment["split"]])
    return {
        "train_cam": cam["epochs"] * VOC_SPLIT_IMAGES[cam["split"]],
        "make_cams": cams_and_walk,
        "crf_labels": VOC_SPLIT_IMAGES[segment["split"]],
        "train_affinity": affinity["epochs"] * VOC_SPLIT_IMAGES[segment["split"]],
        "random_walk": cams_and_walk,
        "train_deeplab": segment["iterations"] * segment["batch_size"],
        "infer_deeplab": VOC_SPLIT_IMAGES[segment["infer"]["split"]],
    }


def proportional_val_images(configured: dict, train_images: int) -> int:
    """Val images that cost train_cam's validation the share of an epoch VOC val costs next to its split."""
    voc_train = VOC_SPLIT_IMAGES[configured["train_cam"]["split"]]
    return max(1, round(train_images * VOC_SPLIT_IMAGES["val"] / voc_train))


def benchmark_hparams(configured: dict, *, train_images: int, timed_epochs: int, tiny: bool) -> dict:
    """The configured hyper-parameters with the benchmark's overrides: random init, 1 warm-up + timed
    epochs (DeepLab: as many passes over the images in iterations), and the --tiny sizes."""
    hp = deep_merge(configured, RANDOM_INIT)
    if tiny:
        hp = deep_merge(hp, TINY_HPARAMS)
        hp["make_cams"]["scales"] = list(configured["make_cams"]["scales"][:2])
    for stage, opts in (("train_cam", hp["train_cam"]), ("train_affinity", hp["refine"]["affinity"]),
                        ("train_deeplab", hp["segment"])):
        if opts["batch_size"] > train_images:
            raise ValueError(f"{stage} trains in batches of {opts['batch_size']}: give at least that many images")
    epochs = 1 + timed_epochs
    deeplab_steps_per_epoch = train_images // hp["segment"]["batch_size"]  # drop_last, as the loop does
    return deep_merge(hp, {"train_cam": {"epochs": epochs}, "refine": {"affinity": {"epochs": epochs}},
                           "segment": {"iterations": epochs * deeplab_steps_per_epoch}})


def write_voc_tree(root: Path, train_images: int, val_images: int, size: tuple[int, int], seed: int = 0) -> dict:
    """A VOC-layout tree of synthetic scenes at ``size`` (width, height) and its split tables.

    Scenes are rendered square at the long side (objects, marks and textured background of
    wsss_lib.data.synthetic, classes 1..20) and resized to ``size``. train and train_aug list the same
    images (a rate per image does not depend on which split the config names); val is disjoint.
    Returns {split: split table CSV path}.
    """
    if root.exists():
        raise FileExistsError(f"{root} exists: give a new or empty --workdir")
    train_ids = [f"bench_{i:05d}" for i in range(train_images)]
    val_ids = [f"bench_{train_images + i:05d}" for i in range(val_images)]
    jpegs, masks, lists = root / "JPEGImages", root / "SegmentationClass", root / "ImageSets" / "Segmentation"
    for folder in (jpegs, masks, lists):
        folder.mkdir(parents=True)
    for index, image_id in enumerate(train_ids + val_ids):
        image, labels, _ = render_image(np.random.default_rng([seed, index]), max(size), len(VOC_CLASSES))
        # quality 90: VOC's photos are ordinary camera JPEGs; decoding cost hardly depends on it
        Image.fromarray(image).resize(size, Image.Resampling.BILINEAR).save(jpegs / f"{image_id}.jpg", quality=90)
        write_label_png(masks / f"{image_id}.png",
                        np.asarray(Image.fromarray(labels).resize(size, Image.Resampling.NEAREST)))
    splits = {"train": train_ids, "train_aug": train_ids, "val": val_ids}
    tables = {}
    for split, ids in splits.items():
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        tables[split] = root / f"{split}.csv"
        build_split_table(root, split, VOC_CLASSES).to_csv(tables[split], index=False)
    return tables


def head_csv(table_csv: Path, rows: int, out: Path) -> Path:
    """The first ``rows`` rows of a split table: the images of a warm-up call."""
    lines = table_csv.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[: rows + 1]))
    return out


class StageClock:
    """Wall seconds and peak GPU memory of a block. cuDNN autotuning starts off, as in a fresh process
    (each workflow stage is its own job; the training loop turns it on and leaves it on)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds = 0.0
        self.peak_gpu_mb: float | None = None

    def __enter__(self) -> "StageClock":
        torch.backends.cudnn.benchmark = False
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()  # the stage's queued kernels belong to its time
            self.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20
        self.seconds = time.perf_counter() - self.started


def steady_epochs(rows: list[dict], images_per_epoch: int) -> tuple[int, float]:
    """(images, seconds) of a training run's epochs after the first, from the loop's per-epoch log rows."""
    steady = rows[1:]
    if not steady:
        raise ValueError("a training stage needs at least 2 epochs to time one after the warm-up epoch")
    return len(steady) * images_per_epoch, sum(row["seconds"] for row in steady)


def run_stages(work: Path, configured: dict, *, tiny: bool, train_images: int, val_images: int,
               timed_epochs: int, warmup_images: int, device: str, threads: int,
               cpu_processes: int) -> dict:
    """Build the image tree, run the seven stages in order on each other's outputs, and return the result."""
    hp = benchmark_hparams(configured, train_images=train_images, timed_epochs=timed_epochs, tiny=tiny)
    dev = resolve_device(device)
    size = TINY_IMAGE_SIZE if tiny else VOC_IMAGE_SIZE
    tables = write_voc_tree(work / "voc", train_images, val_images, size)
    cam_opts, affinity_opts, segment_opts = hp["train_cam"], hp["refine"]["affinity"], hp["segment"]
    cam_train_csv = str(tables[cam_opts["split"]])
    pseudo_csv = str(tables[segment_opts["split"]])
    # make_cams and the walk cover the CAM evaluation split and the pseudo-label split (rules/common.smk)
    cam_and_pseudo_csvs = list(dict.fromkeys([str(tables[hp["eval_cams"]["split"]]), pseudo_csv]))
    infer_csv = tables[segment_opts["infer"]["split"]]
    warmup_train = str(head_csv(tables["train_aug"], warmup_images, work / "warmup_train.csv"))
    warmup_val = str(head_csv(infer_csv, warmup_images, work / "warmup_val.csv"))
    full_voc = full_voc_workload(configured)
    stages: list[dict] = []

    def record(stage: str, images: int, seconds: float, clock: StageClock, on: str) -> None:
        rate = images / seconds
        timing = (f"epochs 2-{1 + timed_epochs}, the training loop's clock" if stage in TRAINING_STAGES
                  else f"the whole call, after an untimed call on {warmup_images} images")
        stages.append({"stage": stage, "device": on, "images": images, "seconds": seconds,
                       "images_per_second": rate,
                       "peak_gpu_mb": clock.peak_gpu_mb if on == "cuda" else None,
                       "timing": timing, "call_seconds": clock.seconds, "full_voc_images": full_voc[stage],
                       "full_voc_hours": full_voc[stage] / rate / 3600})
        print(f"[gpu_stages] {stage}: {images} images in {seconds:.3f} s ({rate:.2f} img/s)", flush=True)

    def train_epoch_images(batch_size: int) -> int:
        return (train_images // batch_size) * batch_size

    cam_model = work / "cam" / "model.pt"
    with StageClock(dev) as clock:
        rows = train_cam(cam_train_csv, str(tables["val"]), str(cam_model), str(work / "cam" / "log.csv"), hp,
                         device=device, threads=threads, method="benchmark")
    record("train_cam", *steady_epochs(rows, train_epoch_images(cam_opts["batch_size"])), clock, dev.type)

    cams = work / "cam" / "cams.h5"
    make_cams(str(cam_model), warmup_train, str(work / "warmup" / "cams.h5"), hp, device=device, threads=threads)
    with StageClock(dev) as clock:
        make_cams(str(cam_model), cam_and_pseudo_csvs, str(cams), hp, device=device, threads=threads)
    record("make_cams", train_images, clock.seconds, clock, dev.type)  # train and train_aug: the same images

    labels = work / "refine" / "affinity_labels.h5"
    crf_labels(str(cams), warmup_train, str(work / "warmup" / "labels.h5"), hp, threads=cpu_processes)
    with StageClock(dev) as clock:
        crf_labels(str(cams), pseudo_csv, str(labels), hp, threads=cpu_processes)
    record("crf_labels", train_images, clock.seconds, clock, "cpu")

    affinity_model = work / "refine" / "affinity.pt"
    with StageClock(dev) as clock:  # init_model is read only with refine.affinity.init: cam
        rows = train_affinity(str(labels), pseudo_csv, str(affinity_model), str(work / "refine" / "log.csv"), hp,
                              init_model=str(cam_model), device=device, threads=threads, method="benchmark")
    record("train_affinity", *steady_epochs(rows, train_epoch_images(affinity_opts["batch_size"])), clock, dev.type)

    pseudo = work / "refine" / "pseudo"
    random_walk(str(affinity_model), str(cams), warmup_train, str(work / "warmup" / "pseudo"), hp, device=device,
                threads=threads)
    with StageClock(dev) as clock:
        random_walk(str(affinity_model), str(cams), cam_and_pseudo_csvs, str(pseudo), hp, device=device,
                    threads=threads)
    record("random_walk", train_images, clock.seconds, clock, dev.type)

    deeplab_model = work / "seg" / "model.pt"
    with StageClock(dev) as clock:
        rows = train_deeplab(str(pseudo), pseudo_csv, str(deeplab_model), str(work / "seg" / "log.csv"), hp,
                             device=device, threads=threads, method="benchmark")
    record("train_deeplab", *steady_epochs(rows, train_epoch_images(segment_opts["batch_size"])), clock, dev.type)

    # threads: the CRF post-processing pool (and torch's CPU threads), as the infer_deeplab job's threads
    infer_deeplab(str(deeplab_model), warmup_val, str(work / "warmup" / "pred"), hp, device=device,
                  threads=cpu_processes)
    with StageClock(dev) as clock:
        infer_deeplab(str(deeplab_model), str(infer_csv), str(work / "seg" / "pred"), hp, device=device,
                      threads=cpu_processes)
    record("infer_deeplab", val_images, clock.seconds, clock, dev.type)

    return {
        "stages": stages,
        "total_full_voc_hours": sum(stage["full_voc_hours"] for stage in stages),
        "settings": {
            "tiny": tiny, "image_size": list(size), "train_images": train_images, "val_images": val_images,
            "timed_epochs": timed_epochs, "warmup_images": warmup_images, "device": str(dev),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, "torch": torch.__version__,
            "threads": threads, "cpu_processes": cpu_processes,
            "workload": stage_workloads(hp, configured, cpu_processes, loader_workers(
                hp["train_cam"]["num_workers"], threads, dev)),
        },
    }


def stage_workloads(hp: dict, configured: dict, cpu_processes: int, cam_workers: int) -> dict[str, str]:
    """One line per stage: what was run here and what the full-VOC extrapolation assumes."""
    cam, affinity, segment = hp["train_cam"], hp["refine"]["affinity"], hp["segment"]
    full = full_voc_workload(configured)
    configured_cam, configured_segment = configured["train_cam"], configured["segment"]
    crf, walk = hp["refine"]["crf"], hp["refine"]["random_walk"]
    return {
        "train_cam": f"{hp['backbone']} OS{hp['output_stride']}, crop {cam['crop']}, batch {cam['batch_size']}, "
                     f"{cam_workers} loader worker(s), validation every {cam['val_every']} epoch(s); full VOC: "
                     f"{configured_cam['epochs']} epochs x {configured_cam['split']} = {full['train_cam']:,} images",
        "make_cams": f"scales {hp['make_cams']['scales']} x flip {hp['make_cams']['flip']}, batch "
                     f"{hp['make_cams']['batch_size']}; full VOC: {full['make_cams']:,} images",
        "crf_labels": f"dense CRF x 2 (alpha {crf['low_alpha']} / {crf['high_alpha']}, {crf['iterations']} "
                      f"iterations) in a pool of {cpu_processes} CPU processes; full VOC: "
                      f"{full['crf_labels']:,} images",
        "train_affinity": f"{hp['backbone']} OS{affinity['output_stride']} stride {affinity['stride']}, crop "
                          f"{affinity['crop']}, batch {affinity['batch_size']}; full VOC: "
                          f"{configured['refine']['affinity']['epochs']} epochs = {full['train_affinity']:,} images",
        "random_walk": f"radius {affinity['radius']}, beta {walk['beta']}, 2^{walk['exp_times']} steps; full VOC: "
                       f"{full['random_walk']:,} images",
        "train_deeplab": f"{segment['backbone']} OS{segment['output_stride']} head {segment['head']}, crop "
                         f"{segment['crop']}, batch {segment['batch_size']}; full VOC: "
                         f"{configured_segment['iterations']:,} iterations x {configured_segment['batch_size']}",
        "infer_deeplab": f"scales {segment['infer']['scales']}, flip {segment['infer']['flip']}, CRF "
                         f"{segment['infer']['crf']} ({cpu_processes} processes); full VOC: "
                         f"{full['infer_deeplab']:,} {segment['infer']['split']} images",
    }


def format_table(result: dict) -> str:
    """The result as an aligned text table, one row per stage and a total of the full-VOC hours."""
    widths = (15, 7, 7, 10, 10, 12, 16, 11)
    header = "".join(f"{name:>{width}}" if i else f"{name:<{width}}" for i, (name, width) in
                     enumerate(zip(TABLE_COLUMNS, widths)))
    lines = [header]
    for row in result["stages"]:
        peak = "n/a" if row["peak_gpu_mb"] is None else f"{row['peak_gpu_mb']:.0f}"
        cells = (row["stage"], row["device"], str(row["images"]), f"{row['seconds']:.3f}",
                 f"{row['images_per_second']:.2f}", peak, str(row["full_voc_images"]), f"{row['full_voc_hours']:.3f}")
        lines.append("".join(f"{cell:>{width}}" if i else f"{cell:<{width}}" for i, (cell, width) in
                             enumerate(zip(cells, widths))))
    lines.append(f"{'total':<{sum(widths[:-1])}}{result['total_full_voc_hours']:>{widths[-1]}.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="baseline", help="the config method whose hyper-parameters are timed")
    parser.add_argument("--configfile", action="append", default=[],
                        help="a config merged over config/config.yaml (repeatable), e.g. config/train_aug.yaml")
    parser.add_argument("--tiny", action="store_true", help="64x48 images, small_cnn nets: a CPU run in seconds")
    parser.add_argument("--images", type=int, help="training images (default 80; --tiny 8)")
    parser.add_argument("--val-images", type=int,
                        help="val images (default: train_cam's validation at VOC val's share of an epoch)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="timed epochs of each training stage after the warm-up epoch (default 2; --tiny 1)")
    parser.add_argument("--warmup-images", type=int, default=None,
                        help="images of the untimed warm-up call of the other stages (default 4; --tiny 2)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads of the GPU stages (default: min(4, cores), the SLURM profile's)")
    parser.add_argument("--cpu-processes", type=int, default=None,
                        help="CRF pool of crf_labels and infer_deeplab (default: the machine's cores)")
    parser.add_argument("--workdir", help="keep images, models and stores here (default: a removed temp dir)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)

    cores = machine_cores()
    configured = configured_hparams(args.method, args.configfile)
    train_images = args.images or (8 if args.tiny else 80)
    options = {
        "tiny": args.tiny,
        "train_images": train_images,
        "val_images": args.val_images or proportional_val_images(configured, train_images),
        "timed_epochs": args.epochs or (1 if args.tiny else 2),
        "warmup_images": args.warmup_images or (2 if args.tiny else 4),
        "device": args.device,
        "threads": args.threads or min(4, cores),  # profiles/slurm/config.yaml set-threads: 4 per GPU job
        "cpu_processes": args.cpu_processes or cores,
    }
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.workdir) if args.workdir else Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        result = run_stages(work, configured, **options)
    result["settings"].update(method=args.method, config=[str(CONFIG), *args.configfile])

    settings = result["settings"]
    print(f"\nGPU stages of method {args.method!r} on {settings['device']} ({settings['gpu'] or 'no GPU'}), torch "
          f"{settings['torch']}, random init; {settings['train_images']} training + {settings['val_images']} val "
          f"synthetic images of {settings['image_size'][0]}x{settings['image_size'][1]}; training timed over "
          f"{settings['timed_epochs']} epoch(s) after a warm-up epoch; CRF pools of {settings['cpu_processes']} "
          f"processes")
    print(format_table(result))
    for stage, text in settings["workload"].items():
        print(f"  {stage:<15}{text}")
    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
