"""benchmarks/gpu_stages.py: a --tiny run on the CPU times every stage with the production functions; its
counts, rates and full-VOC extrapolations are checked against their definitions (recomputed here from the
config and VOC's split sizes), and its JSON file against the printed table. benchmarks/job_profile.py: per-rule
sums of a run's benchmark files."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest
import torch
import yaml

from wsss_lib.config import method_config

REPO = Path(__file__).resolve().parents[1]
VOC_TRAIN, VOC_TRAIN_AUG, VOC_VAL = 1464, 10582, 1449  # PASCAL VOC 2012 (+ SBD for train_aug) image counts
TRAIN_IMAGES, TIMED_EPOCHS = 8, 1


def load_benchmark(name: str = "gpu_stages"):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_stages():
    return load_benchmark()


@pytest.fixture(scope="module")
def configured() -> dict:
    """baseline's effective VOC hyper-parameters, read here without the benchmark's helpers."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["dataset"] = "voc12"
    return method_config(config, "baseline")


@pytest.fixture(scope="module")
def tiny_run(gpu_stages, tmp_path_factory):
    """(returned result, JSON file's content, printed output) of one --tiny CPU run."""
    tmp = tmp_path_factory.mktemp("gpu_stages")
    printed = io.StringIO()
    torch_threads = torch.get_num_threads()  # the stages set torch's process-wide thread count
    try:
        with contextlib.redirect_stdout(printed):
            result = gpu_stages.main(["--tiny", "--device", "cpu", "--images", str(TRAIN_IMAGES), "--epochs",
                                      str(TIMED_EPOCHS), "--threads", "1", "--cpu-processes", "2",
                                      "--workdir", str(tmp / "work"), "--json", str(tmp / "result.json")])
    finally:
        torch.set_num_threads(torch_threads)
    return result, json.loads((tmp / "result.json").read_text()), printed.getvalue()


def test_every_stage_is_timed_on_the_images_it_processed(gpu_stages, tiny_run):
    result, _, _ = tiny_run
    stages = {row["stage"]: row for row in result["stages"]}
    assert list(stages) == ["train_cam", "make_cams", "crf_labels", "train_affinity", "random_walk",
                            "train_deeplab", "infer_deeplab"]
    tiny = gpu_stages.TINY_HPARAMS
    batches = {"train_cam": tiny["train_cam"]["batch_size"], "train_affinity": tiny["refine"]["affinity"]["batch_size"],
               "train_deeplab": tiny["segment"]["batch_size"]}
    val_images = round(TRAIN_IMAGES * VOC_VAL / VOC_TRAIN)  # baseline's CAM net validates on val, trains on train
    for stage, batch in batches.items():  # the timed epochs after the warm-up one, full batches only
        assert stages[stage]["images"] == TIMED_EPOCHS * (TRAIN_IMAGES // batch) * batch, stage
    for stage in ("make_cams", "crf_labels", "random_walk"):
        assert stages[stage]["images"] == TRAIN_IMAGES, stage
    assert stages["infer_deeplab"]["images"] == val_images == result["settings"]["val_images"]
    for row in stages.values():
        assert row["seconds"] > 0
        assert row["images_per_second"] == pytest.approx(row["images"] / row["seconds"], rel=1e-12)
        assert row["device"] == "cpu" and row["peak_gpu_mb"] is None
        assert row["call_seconds"] >= row["seconds"] * (1 - 1e-9)  # the timed part lies inside the call
    for stage in ("train_cam", "train_affinity", "train_deeplab"):  # the warm-up epoch is not timed
        assert stages[stage]["call_seconds"] > stages[stage]["seconds"]


def test_extrapolation_is_the_configured_full_voc_run_at_the_measured_rate(tiny_run, configured):
    result, _, _ = tiny_run
    cam, segment = configured["train_cam"], configured["segment"]
    assert (cam["split"], configured["eval_cams"]["split"], segment["split"], segment["infer"]["split"]) == \
        ("train", "train", "train_aug", "val")  # the counts below assume baseline's splits
    expected_images = {
        "train_cam": cam["epochs"] * VOC_TRAIN,
        "make_cams": VOC_TRAIN_AUG,  # train lies inside train_aug
        "crf_labels": VOC_TRAIN_AUG,
        "train_affinity": configured["refine"]["affinity"]["epochs"] * VOC_TRAIN_AUG,
        "random_walk": VOC_TRAIN_AUG,
        "train_deeplab": segment["iterations"] * segment["batch_size"],
        "infer_deeplab": VOC_VAL,
    }
    hours = 0.0
    for row in result["stages"]:
        assert row["full_voc_images"] == expected_images[row["stage"]], row["stage"]
        measured_rate = row["images"] / row["seconds"]
        assert row["full_voc_hours"] == pytest.approx(expected_images[row["stage"]] / measured_rate / 3600, rel=1e-9)
        hours += row["full_voc_hours"]
    assert result["total_full_voc_hours"] == pytest.approx(hours, rel=1e-12)


def test_only_random_init_and_the_schedule_are_overridden(gpu_stages, configured):
    """Full-size mode keeps every configured value (resnet50 OS16 CAM net, crops, batches, scales) but these."""
    assert configured["train_cam"]["freeze_bn"] and configured["segment"]["freeze_bn"]  # else the test below is weaker
    hp = gpu_stages.benchmark_hparams(configured, train_images=80, timed_epochs=2, tiny=False)

    def leaves(tree, prefix=()):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, (*prefix, key))
            else:
                yield (*prefix, key), value

    changed = {path: value for path, value in leaves(hp) if dict(leaves(configured)).get(path) != value}
    assert changed == {("pretrained",): "none", ("segment", "pretrained"): "none", ("train_cam", "epochs"): 3,
                       # BatchNorm statistics frozen at random init normalise nothing: random weights train them
                       ("train_cam", "freeze_bn"): False, ("refine", "affinity", "freeze_bn"): False,
                       ("segment", "freeze_bn"): False,
                       ("refine", "affinity", "epochs"): 3,
                       ("segment", "iterations"): 3 * (80 // configured["segment"]["batch_size"])}
    assert dict(leaves(hp)).keys() == dict(leaves(configured)).keys()


def test_json_file_matches_the_printed_table(tiny_run):
    result, written, printed = tiny_run
    assert written == json.loads(json.dumps(result))
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("stage") and "full_VOC_h" in line)
    assert lines[header].split() == ["stage", "device", "images", "seconds", "img/s", "peak_GPU_MB",
                                     "full_VOC_images", "full_VOC_h"]
    table = [line.split() for line in lines[header + 1: header + 1 + len(written["stages"])]]
    for cells, row in zip(table, written["stages"]):
        assert cells == [row["stage"], row["device"], str(row["images"]), f"{row['seconds']:.3f}",
                         f"{row['images_per_second']:.2f}", "n/a", str(row["full_voc_images"]),
                         f"{row['full_voc_hours']:.3f}"]
    total = lines[header + 1 + len(written["stages"])].split()
    assert total == ["total", f"{written['total_full_voc_hours']:.3f}"]


def test_job_profile_sums_each_rules_benchmark_files(tmp_path):
    job_profile = load_benchmark("job_profile")
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    timings = {"train_cam/a.tsv": (10.0, 18.0), "train_cam/b.tsv": (30.0, 45.0), "make_synthetic.tsv": (4.0, 4.0)}
    for name, (wall, cpu) in timings.items():
        (tmp_path / "benchmarks" / name).parent.mkdir(parents=True, exist_ok=True)
        row = f"{wall}\t0:00:{int(wall):02d}\t1\t1\t1\t1\t0\t0\t50\t{cpu}\n"
        (tmp_path / "benchmarks" / name).write_text(header + row)
    table = job_profile.rule_profile(job_profile.job_table(tmp_path))
    assert table.index.tolist() == ["train_cam", "make_synthetic"]
    assert table.loc["train_cam"].tolist() == [2, 40.0, 30.0, 63.0, 63.0 / 40.0]
    assert table.loc["make_synthetic", "cpu_per_wall"] == 1.0
    (tmp_path / "benchmarks" / "bad.tsv").write_text("x\n1\n")
    with pytest.raises(ValueError, match="bad.tsv"):
        job_profile.job_table(tmp_path)


def test_train_cam_photos_times_each_epoch_of_the_production_training(gpu_stages, tmp_path):
    """benchmarks/train_cam_photos.py on a tiny VOC-layout tree: every epoch's rate is its full batches over the
    training loop's seconds, on the split the config names, with the requested backbone and initialisation."""
    train_cam_photos = load_benchmark("train_cam_photos")
    gpu_stages.write_voc_tree(tmp_path / "voc", train_images=10, val_images=3, size=(64, 48))
    sizing = tmp_path / "tiny.yaml"
    sizing.write_text(yaml.safe_dump({"voc12": {"hparams": {
        "train_cam": {"split": "train_aug", "crop": 48, "resize_long": [48, 64], "batch_size": 4}}}}))
    torch_threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            result = train_cam_photos.main(["--root", str(tmp_path / "voc"), "--configfile", str(sizing),
                                            "--backbone", "small_cnn", "--pretrained", "none", "--epochs", "2",
                                            "--device", "cpu", "--threads", "1", "--json", str(tmp_path / "r.json")])
    finally:
        torch.set_num_threads(torch_threads)
    settings = result["settings"]
    assert (settings["split"], settings["train_images"], settings["backbone"], settings["pretrained"],
            settings["batch_size"], settings["autocast"], settings["freeze_bn"]) == \
        ("train_aug", 10, "small_cnn", "none", 4, None, False)
    assert [row["epoch"] for row in result["epochs"]] == [1, 2]
    for row in result["epochs"]:
        assert row["images"] == 8  # two full batches of 4; the loader drops the partial one
        assert row["images_per_second"] == pytest.approx(8 / row["seconds"], rel=1e-12)
        assert 0 <= row["data_wait"] <= 1 and 0 <= row["val_map"] <= 1
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(result))
    assert "epoch 2: 8 images" in printed.getvalue()
