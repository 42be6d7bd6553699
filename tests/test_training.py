import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from wsss_lib.config import job_fingerprint
from wsss_lib.data.datasets import ClassificationDataset, InferenceDataset
from wsss_lib.data.synthetic import class_names, generate_synthetic
from wsss_lib.data.transforms import ClassificationTrainTransform
from wsss_lib.data.voc import build_split_table
from wsss_lib.models.cam_net import build_cam_net
from wsss_lib.objectives import Objective, build_batch_loss
from wsss_lib import device, training
from wsss_lib.training import (EpochOrder, ResumeSpec, TrainSettings, epoch_seed, exact_match_accuracy, fit,
                               mean_average_precision, poly_schedule)

BASELINE = build_batch_loss(Objective())
MIXUP = build_batch_loss(Objective(mixing="mixup", alpha=0.4, entropy_weight=0.02))
CPU = torch.device("cpu")
MEAN, STD = (120.0,) * 3, (60.0,) * 3


@pytest.fixture(scope="module")
def tiny_tables(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "tree"
    generate_synthetic(root, n_train=16, n_train_aug=16, n_val=8, image_size=32, n_classes=2, seed=3)
    names = class_names(2)
    return build_split_table(root, "train", names), build_split_table(root, "val", names)


@pytest.fixture(scope="module")
def tiny_sets(tiny_tables):
    train, val = tiny_tables
    transform = ClassificationTrainTransform(32, (28, 36), True, (0.2, 0.2, 0.2, 0.05), MEAN, STD)
    return ClassificationDataset(train, transform, seed=1), InferenceDataset(val, MEAN, STD)


class RecordingSet(Dataset):
    """A training set that records which (epoch, index) items were loaded."""

    def __init__(self, table):
        transform = ClassificationTrainTransform(32, (28, 36), True, (0.2, 0.2, 0.2, 0.05), MEAN, STD)
        self.inner, self.loads = ClassificationDataset(table, transform, seed=1), []

    @property
    def epoch(self):
        return self.inner.epoch

    @epoch.setter
    def epoch(self, value):
        self.inner.epoch = value

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, index):
        self.loads.append((self.inner.epoch, index))
        return self.inner[index]


def mixup_with_dropout(model, images, labels, generator):
    """Mixup draws from the loop's generator, the input dropout from torch's global RNG (as dropout in
    the ViT teacher does): an exact resume has to restore both."""
    return MIXUP(model, F.dropout(images, 0.2), labels, generator)


SETTINGS = TrainSettings(epochs=3, batch_size=4, lr=0.05, weight_decay=1e-4, momentum=0.9, poly_power=0.9,
                         new_layer_lr_mult=10, seed=0)
# 16 images, batch 4: 4 steps per epoch; 10 steps end 2 batches into the third epoch (DeepLab-style). The warm-up
# outlasts the first interruption (step 4), so a resumed run must carry on the same ramp.
MAX_STEPS = TrainSettings(epochs=3, batch_size=4, lr=0.05, weight_decay=1e-4, momentum=0.9,
                          poly_power=0.9, new_layer_lr_mult=10, seed=0, max_steps=10, warmup_steps=5)


def fresh_model():
    torch.manual_seed(0)
    return build_cam_net("small_cnn", 2, "none", 8)


class Preempted(Exception):
    pass


def preempting(loss, at_call):
    """``loss``, but the job is killed when it is called for the ``at_call``-th time (1-based)."""
    calls = []

    def batch_loss(*args):
        calls.append(1)
        if len(calls) == at_call:
            raise Preempted
        return loss(*args)

    return batch_loss


def without_seconds(rows):
    """The rows without their timings (seconds, and the share of them spent waiting for data)."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "data_wait")} for row in rows]


def assert_same_weights(a, b):
    a, b = a.state_dict(), b.state_dict()
    assert list(a) == list(b)
    unequal = [name for name in a if not torch.equal(a[name], b[name])]
    assert not unequal, f"tensors differ: {unequal}"


def saved_steps(text):
    return [int(s) for s in re.findall(r"saved resume state at step (\d+)/", text)]


def scheduled_lrs(steps, **schedule):
    """The lr of each of ``steps`` updates of an lr-0.1 SGD under ``poly_schedule(**schedule)``."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = poly_schedule(optimizer, **schedule)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_poly_schedule_values():
    lrs = scheduled_lrs(10, max_steps=10, power=0.9)
    np.testing.assert_allclose(lrs, [0.1 * (1 - s / 10) ** 0.9 for s in range(10)])


def test_warmup_ramps_the_poly_lr_linearly_over_its_first_updates():
    lrs = scheduled_lrs(10, max_steps=10, power=0.9, warmup_steps=4)
    ramp = [0.25, 0.5, 0.75] + [1.0] * 7  # Goyal et al. 2017: 1/4, 2/4, 3/4 of the lr, full from update 3 on
    np.testing.assert_allclose(lrs, [0.1 * r * (1 - s / 10) ** 0.9 for s, r in enumerate(ramp)])


def test_mean_average_precision_known_answers():
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    assert mean_average_precision(labels.astype(float), labels) == 1.0
    # class 0 ranked: 0.9 (pos), 0.8 (neg), 0.7 (pos) -> AP = (1 + 2/3) / 2; class 1 perfect
    scores = np.array([[0.9, 0.1], [0.8, 0.9], [0.7, 0.2], [0.1, 0.3]])
    assert mean_average_precision(scores, labels) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


def test_epoch_order_is_one_permutation_per_epoch_served_from_any_position():
    order = EpochOrder(10, seed=5)
    first = list(order)
    assert {epoch for epoch, _ in first} == {0}
    full = [index for _, index in first]
    assert sorted(full) == list(range(10)) and full != list(range(10))
    order.set_epoch(0, start=4, stop=8)
    assert [index for _, index in order] == full[4:8] and len(order) == 4
    order.set_epoch(1)
    second = list(order)
    assert {epoch for epoch, _ in second} == {1} and [index for _, index in second] != full
    assert [index for _, index in EpochOrder(10, seed=6)] != full
    assert len({epoch_seed(0, e, s) for e in range(3) for s in ("order", "batch_loss")}) == 6
    assert epoch_seed(1, 0, "order") != epoch_seed(0, 1, "order")  # unlike seed + epoch
    with pytest.raises(ValueError):
        order.set_epoch(0, start=6, stop=4)


def test_training_logs_and_resumes_exactly_after_an_epoch(tiny_sets, tmp_path, capsys):
    train_set, val_set = tiny_sets
    reference = fresh_model()
    rows = fit(reference, train_set, val_set, SETTINGS, BASELINE, CPU, tmp_path / "ref.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(0 <= r["val_map"] <= 1 for r in rows)
    assert rows[-1]["lr"] == 0.0

    def preempt_in_epoch_two(row):
        if row["epoch"] == 2:
            raise Preempted  # as if the job hit its time limit before epoch 2 was saved

    resume = ResumeSpec(tmp_path / "state" / "resume.pt", "job-a", every_epochs=1)
    with pytest.raises(Preempted):
        fit(fresh_model(), train_set, val_set, SETTINGS, BASELINE, CPU, tmp_path / "run.csv", resume,
            on_epoch_end=preempt_in_epoch_two)
    assert resume.path.is_file() and saved_steps(capsys.readouterr().out) == [4]
    resumed = fresh_model()  # a new process: only the saved state carries over
    resumed_rows = fit(resumed, train_set, val_set, SETTINGS, BASELINE, CPU, tmp_path / "run.csv",
                       resume)
    out = capsys.readouterr().out
    assert f"resuming from {resume.path} at step 4/12 (start of epoch 2)" in out, out
    assert saved_steps(out) == [8]  # none after the last epoch
    assert not resume.path.exists()  # removed once training completes
    assert without_seconds(resumed_rows) == without_seconds(rows)
    assert_same_weights(reference, resumed)
    assert (tmp_path / "run.csv").read_text().count("\n") == 4  # header + 3 epochs


def test_mid_epoch_resume_equals_an_uninterrupted_run_and_skips_consumed_batches_unread(tiny_tables, tmp_path,
                                                                                         capsys):
    train_table, val_table = tiny_tables
    val_set = InferenceDataset(val_table, MEAN, STD)
    reference, reference_set = fresh_model(), RecordingSet(train_table)
    rows = fit(reference, reference_set, val_set, MAX_STEPS, mixup_with_dropout, CPU,
               tmp_path / "ref.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["lr"] == 0.0

    # Killed twice. Run 1 dies in step 5 after saving step 4, the last of epoch 1, before epoch 1's
    # row; run 2 resumes there, writes that row, and dies in step 7 after saving step 6, 2 batches
    # into epoch 2; run 3 resumes there and finishes. Every run is a new process: only the state carries over.
    resume = ResumeSpec(tmp_path / "resume.pt", "job-a", every_steps=2)
    runs = [RecordingSet(train_table) for _ in range(3)]
    with pytest.raises(Preempted):
        fit(fresh_model(), runs[0], val_set, MAX_STEPS, preempting(mixup_with_dropout, 5), CPU,
            tmp_path / "run.csv", resume)
    assert saved_steps(capsys.readouterr().out) == [2, 4]
    with pytest.raises(Preempted):
        fit(fresh_model(), runs[1], val_set, MAX_STEPS, preempting(mixup_with_dropout, 3), CPU,
            tmp_path / "run.csv", resume)
    out = capsys.readouterr().out
    assert f"resuming from {resume.path} at step 4/10 (4 batches into epoch 1)" in out, out
    assert saved_steps(out) == [6]
    resumed = fresh_model()
    resumed_rows = fit(resumed, runs[2], val_set, MAX_STEPS, mixup_with_dropout, CPU,
                       tmp_path / "run.csv", resume)
    out = capsys.readouterr().out
    assert f"resuming from {resume.path} at step 6/10 (2 batches into epoch 2)" in out, out
    assert saved_steps(out) == [8]  # and none at the final step 10
    # each run loads the samples of its own steps only, in the uninterrupted order: a resumed epoch
    # skips its consumed samples without reading them
    reference_loads = reference_set.loads
    assert runs[0].loads == reference_loads[:5 * 4]
    assert runs[1].loads == reference_loads[4 * 4:7 * 4]
    assert runs[2].loads == reference_loads[6 * 4:]
    assert without_seconds(resumed_rows) == without_seconds(rows)
    assert_same_weights(reference, resumed)
    assert not resume.path.exists()


def test_state_of_another_job_is_discarded_with_a_log_line(tiny_sets, tmp_path, capsys):
    train_set, _ = tiny_sets
    reference = fresh_model()
    rows = fit(reference, train_set, None, SETTINGS, BASELINE, CPU, tmp_path / "ref.csv")

    old = ResumeSpec(tmp_path / "resume.pt", "0123abcd", every_epochs=1)
    with pytest.raises(Preempted):
        fit(fresh_model(), train_set, None, SETTINGS, preempting(BASELINE, 10), CPU, tmp_path / "run.csv",
            old)
    assert saved_steps(capsys.readouterr().out) == [4, 8]

    changed = ResumeSpec(old.path, "4567cdef", every_epochs=1)  # e.g. the job's config was edited
    model = fresh_model()
    rerun_rows = fit(model, train_set, None, SETTINGS, BASELINE, CPU, tmp_path / "run.csv", changed)
    out = capsys.readouterr().out
    assert (f"discarding resume state {old.path}: it was saved by a job with fingerprint 0123abcd, "
            f"this job's is 4567cdef") in out, out
    assert "resuming" not in out and saved_steps(out) == [4, 8]  # trained from scratch
    assert without_seconds(rerun_rows) == without_seconds(rows)
    assert_same_weights(reference, model)

    old.path.write_bytes(b"truncated by a full disk")
    with pytest.raises(Preempted):  # stopped at its first batch: the state is read before it
        fit(fresh_model(), train_set, None, SETTINGS, preempting(BASELINE, 1), CPU, tmp_path / "run.csv",
            changed)
    out = capsys.readouterr().out
    assert re.search(rf"discarding resume state {re.escape(str(old.path))}: it cannot be read \(", out), out
    assert "resuming" not in out


@pytest.mark.parametrize("interval, steps", [({"every_epochs": 1}, [4, 8]), ({"every_epochs": 2}, [8]),
                                             ({"every_steps": 5}, [5, 10]), ({"every_steps": 2}, [2, 4, 6, 8, 10])])
def test_the_interval_is_honoured(tiny_sets, tmp_path, capsys, monkeypatch, interval, steps):
    train_set, _ = tiny_sets  # SETTINGS: 3 epochs of 4 steps; no state is saved at the end, it would be removed
    saves = []
    resume = ResumeSpec(tmp_path / "resume.pt", "job", **interval)
    original = torch.save

    def watching_save(obj, path, *args, **kwargs):
        saves.append((obj["epoch"], obj["batch"], obj["fingerprint"], len(obj["rows"])))
        return original(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", watching_save)
    fit(fresh_model(), train_set, None, SETTINGS, BASELINE, CPU, tmp_path / "log.csv", resume)
    assert saved_steps(capsys.readouterr().out) == steps
    assert [4 * epoch + batch for epoch, batch, _, _ in saves] == steps
    assert all(fingerprint == "job" for _, _, fingerprint, _ in saves)
    # a state holds the rows of the epochs before its position (a state saved after an epoch's last
    # step but before its row is (epoch, 4), not (epoch + 1, 0))
    assert all(n_rows == epoch for epoch, _, _, n_rows in saves)
    assert not resume.path.exists()


def test_resume_spec_needs_exactly_one_interval():
    for bad in ({}, {"every_epochs": 1, "every_steps": 5}, {"every_epochs": 0}, {"every_steps": -1}):
        with pytest.raises(ValueError, match="exactly one"):
            ResumeSpec("state.pt", "job", **bad)


def test_job_fingerprint_follows_params_and_inputs(tmp_path):
    split, pseudo = tmp_path / "train.csv", tmp_path / "pseudo"
    split.write_text("id\n1\n")
    pseudo.mkdir()
    (pseudo / "1.png").write_bytes(b"png")
    params = {"code": "abc", "hp": {"train_cam": {"lr": 0.1}}, "resume": "r/.resume/x.pt"}
    base = job_fingerprint(params, [str(split), str(pseudo)])
    assert job_fingerprint(dict(params), [str(pseudo), str(split)]) == base  # order of inputs is irrelevant
    assert job_fingerprint({**params, "hp": {"train_cam": {"lr": 0.2}}}, [str(split), str(pseudo)]) != base
    assert job_fingerprint({**params, "code": "abd"}, [str(split), str(pseudo)]) != base
    stat = split.stat()
    os.utime(split, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # rewritten, same size
    assert job_fingerprint(params, [str(split), str(pseudo)]) != base
    base = job_fingerprint(params, [str(split), str(pseudo)])
    (pseudo / "2.png").write_bytes(b"png")  # a file inside an input directory
    assert job_fingerprint(params, [str(split), str(pseudo)]) != base


def test_max_steps_stops_mid_epoch_with_the_poly_decay_spanning_it(tiny_sets, tmp_path):
    train_set, _ = tiny_sets  # 16 images, batch 4: 4 steps per epoch
    calls = []

    def counting_loss(model, images, labels, generator):
        calls.append(len(images))
        return BASELINE(model, images, labels, generator)

    settings = TrainSettings(epochs=100, batch_size=4, lr=0.05, weight_decay=0.0, momentum=0.0, poly_power=1.0,
                             new_layer_lr_mult=10, seed=0, max_steps=6)
    assert settings.total_steps(4) == 6 and SETTINGS.total_steps(4) == 12
    rows = fit(fresh_model(), train_set, None, settings, counting_loss, CPU, tmp_path / "log.csv")
    assert len(calls) == 6  # one full epoch of 4 steps, then 2 of the second
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["lr"] == pytest.approx(0.05 * (1 - 4 / 6)) and rows[1]["lr"] == 0.0


def test_exact_match_accuracy_known_answers():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    # right / one class wrong / right (0.51 and 0.9 > 0.5) / 0.5 is not a positive (torch.round(0.5) == 0)
    scores = np.array([[0.9, 0.2], [0.6, 0.7], [0.51, 0.9], [0.5, 0.1]])
    assert exact_match_accuracy(scores, labels) == 0.75
    assert exact_match_accuracy(labels.astype(float), labels) == 1.0


def test_settings_reject_an_unknown_selection_and_patience_without_one():
    with pytest.raises(ValueError, match="'best'"):
        TrainSettings(**{**vars(SETTINGS), "select": "best"})
    with pytest.raises(ValueError, match="patience"):
        TrainSettings(**{**vars(SETTINGS), "early_stop_patience": 3})
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="warmup_steps"):
            TrainSettings(**{**vars(SETTINGS), "warmup_steps": bad})


def flat_parameters(model):
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.mark.parametrize("warmup", [0, 3])
def test_poly_horizon_warmup_and_gradient_clipping_give_each_update_its_expected_length(tiny_sets, tmp_path,
                                                                                        warmup):
    """mva-wsss: poly decay over 100k steps (an ~constant lr) and Lightning's gradient-norm clipping; and a linear
    warm-up. Without momentum or decay an update is -lr_k * g * min(1, c / |g|): its length is lr_k * c when
    |g| > c, with lr_k = lr * min(1, (k + 1) / warmup) * (1 - k / horizon)."""
    train_set, _ = tiny_sets  # 16 images, batch 4: 4 updates
    before_each_call = []

    def recording_loss(model, images, labels, generator):
        before_each_call.append(flat_parameters(model))
        return BASELINE(model, images, labels, generator)

    clip, lr, horizon = 1e-3, 0.05, 100
    settings = TrainSettings(epochs=1, batch_size=4, lr=lr, weight_decay=0.0, momentum=0.0, poly_power=1.0,
                             new_layer_lr_mult=1, seed=0, poly_steps=horizon, grad_clip_norm=clip,
                             warmup_steps=warmup)
    model = fresh_model()
    rows = fit(model, train_set, None, settings, recording_loss, CPU, tmp_path / "log.csv")
    after = [*before_each_call[1:], flat_parameters(model)]
    lengths = [float(torch.linalg.vector_norm(b - a)) for a, b in zip(before_each_call, after)]
    ramp = [min(1.0, (k + 1) / warmup) if warmup else 1.0 for k in range(4)]
    np.testing.assert_allclose(lengths, [lr * r * (1 - k / horizon) * clip for k, r in enumerate(ramp)], rtol=1e-3)
    assert rows[0]["lr"] == pytest.approx(lr * (1 - 4 / horizon))  # not 0: the decay spans 100 steps, not 4


def scripted_validation(train_set, accuracies):
    """A stand-in for predict_scores whose exact-match accuracy in epoch e (read from the training set the loop
    has just trained on) is accuracies[e]: the first round(acc * 10) of 10 images right, the rest wrong."""
    def predict(model, val_set, device, batch_size=8, num_workers=0):
        right = round(accuracies[train_set.epoch] * 10)
        labels = np.tile([[1.0, 0.0]], (10, 1))
        scores = np.where(np.arange(10)[:, None] < right, labels, 1 - labels)
        return scores, labels
    return predict


def test_select_keeps_the_best_epochs_weights_and_early_stop_ends_the_run(tiny_sets, tmp_path, monkeypatch,
                                                                            capsys):
    train_set, val_set = tiny_sets
    monkeypatch.setattr(training, "predict_scores", scripted_validation(train_set, [0.5, 0.8, 0.8, 0.6, 0.9, 1.0]))
    weights_after = {}

    def snapshot(row):
        weights_after[row["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    settings = TrainSettings(**{**vars(SETTINGS), "epochs": 6, "select": "best_val_accuracy",
                                "early_stop_patience": 2})
    model = fresh_model()
    rows = fit(model, train_set, val_set, settings, BASELINE, CPU, tmp_path / "log.csv",
               on_epoch_end=snapshot)
    # epoch 2 scores 0.8; epoch 3 only ties it and epoch 4 is worse: two epochs without beating it
    assert [r["val_accuracy"] for r in rows] == [0.5, 0.8, 0.8, 0.6]
    out = capsys.readouterr().out
    assert "early stop after epoch 4" in out and "keeping epoch 2's weights" in out, out
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights_after[2][name]), name
    assert any(not torch.equal(weights_after[2][k], weights_after[4][k]) for k in weights_after[2])

    lowest = TrainSettings(**{**vars(SETTINGS), "select": "lowest_train_loss"})
    model = fresh_model()
    weights_after.clear()
    rows = fit(model, train_set, None, lowest, BASELINE, CPU, tmp_path / "log2.csv",
               on_epoch_end=snapshot)
    best = min(rows, key=lambda r: r["train_loss"])["epoch"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights_after[best][name]), name
    with pytest.raises(ValueError, match="validation"):
        fit(fresh_model(), train_set, None, settings, BASELINE, CPU, tmp_path / "log3.csv")


def test_a_resumed_run_keeps_the_best_epoch_seen_before_the_interruption(tiny_sets, tmp_path, monkeypatch):
    train_set, val_set = tiny_sets
    monkeypatch.setattr(training, "predict_scores", scripted_validation(train_set, [0.3, 0.9, 0.4, 0.5]))
    settings = TrainSettings(**{**vars(SETTINGS), "epochs": 4, "select": "best_val_accuracy"})
    reference = fresh_model()
    fit(reference, train_set, val_set, settings, BASELINE, CPU, tmp_path / "ref.csv")

    def preempt_after_epoch_three(row):
        if row["epoch"] == 3:
            raise Preempted

    resume = ResumeSpec(tmp_path / "resume.pt", "job", every_epochs=1)
    with pytest.raises(Preempted):
        fit(fresh_model(), train_set, val_set, settings, BASELINE, CPU, tmp_path / "run.csv", resume,
            on_epoch_end=preempt_after_epoch_three)
    resumed = fresh_model()
    fit(resumed, train_set, val_set, settings, BASELINE, CPU, tmp_path / "run.csv", resume)
    assert_same_weights(reference, resumed)  # epoch 2's weights, known only from before the interruption


def test_persistent_workers_augment_each_epoch_as_the_main_process_does(tiny_sets, tmp_path, monkeypatch):
    """One loader serves the whole run, its worker keeping its own copy of the dataset: each item carries its
    epoch there, so a worker-fed run is bitwise the main-process run (augmentation differs by epoch)."""
    train_set, val_set = tiny_sets
    monkeypatch.setattr(training, "loader_workers", lambda configured, threads, device: configured)
    runs = []
    for workers in (0, 1):
        model = fresh_model()
        settings = TrainSettings(**{**vars(SETTINGS), "num_workers": workers})
        rows = fit(model, train_set, val_set, settings, MIXUP, CPU, tmp_path / f"{workers}.csv")
        runs.append((model, rows))
    assert without_seconds(runs[0][1]) == without_seconds(runs[1][1])
    assert_same_weights(runs[0][0], runs[1][0])
    assert all(0.0 <= row["data_wait"] <= 1.0 for _, rows in runs for row in rows)


def test_validation_every_k_epochs_and_after_the_last(tiny_sets, tmp_path, monkeypatch):
    train_set, val_set = tiny_sets
    monkeypatch.setattr(training, "predict_scores", scripted_validation(train_set, [0.2, 0.9, 0.4, 0.5, 0.6]))
    settings = TrainSettings(**{**vars(SETTINGS), "epochs": 5, "val_every": 2, "select": "best_val_accuracy"})
    rows = fit(fresh_model(), train_set, val_set, settings, BASELINE, CPU, tmp_path / "log.csv")
    assert [row.get("val_accuracy") for row in rows] == [None, 0.9, None, 0.5, 0.6]
    header = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert "val_accuracy" in header and "data_wait" in header
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="val_every"):
            TrainSettings(**{**vars(SETTINGS), "val_every": bad})


def test_loader_workers_feed_a_gpu_and_leave_a_small_cpu_job_to_the_network():
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert device.loader_workers(4, 2, gpu) == 4  # at least the configured number
    assert [device.loader_workers(1, threads, gpu) for threads in (1, 4, 8)] == [1, 4, 8]  # a worker a core
    assert [device.loader_workers(2, threads, cpu) for threads in (1, 2, 3, 4, 8, 16)] == [1, 0, 0, 1, 2, 2]


def test_training_leaves_cudnn_autotuning_as_it_found_it(tiny_sets, tmp_path, monkeypatch):
    """The loop turns autotuning on for its fixed crops; the setting is process-wide, so what runs next in
    the process must get it back."""
    train_set, val_set = tiny_sets
    for before in (True, False):
        monkeypatch.setattr(torch.backends.cudnn, "benchmark", before)
        fit(fresh_model(), train_set, None, TrainSettings(**{**vars(SETTINGS), "epochs": 1}), BASELINE,
            CPU, tmp_path / f"{before}.csv")
        assert torch.backends.cudnn.benchmark is before


def test_varied_input_sizes_turns_cudnn_off_on_cuda_only_and_restores_it(monkeypatch):
    """Full-size inference runs without cuDNN on CUDA (a plan search for every new image size); the flag is
    process-wide, so it comes back as it was, also when the body raises. A CPU device leaves it alone."""
    for before in (True, False):
        monkeypatch.setattr(torch.backends.cudnn, "enabled", before)
        with device.varied_input_sizes(torch.device("cuda")):
            assert torch.backends.cudnn.enabled is False
        assert torch.backends.cudnn.enabled is before
        with pytest.raises(RuntimeError, match="inside"):
            with device.varied_input_sizes(torch.device("cuda")):
                raise RuntimeError("inside")
        assert torch.backends.cudnn.enabled is before
        with device.varied_input_sizes(torch.device("cpu")):
            assert torch.backends.cudnn.enabled is before
