import numpy as np
import pytest
import torch

from wsss_lib.data.datasets import ClassificationDataset, InferenceDataset
from wsss_lib.data.synthetic import class_names, generate_synthetic
from wsss_lib.data.transforms import ClassificationTrainTransform
from wsss_lib.data.voc import build_split_table
from wsss_lib.models.cam_net import build_cam_net
from wsss_lib.objectives import Objective, build_batch_loss
from wsss_lib.training import TrainSettings, mean_average_precision, poly_schedule, train_classifier

BASELINE = build_batch_loss(Objective())


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "tree"
    generate_synthetic(root, n_train=16, n_train_aug=16, n_val=8, image_size=32, n_classes=2, seed=3)
    names = class_names(2)
    train, val = build_split_table(root, "train", names), build_split_table(root, "val", names)
    transform = ClassificationTrainTransform(32, (28, 36), True, (0.2, 0.2, 0.2, 0.05), (120.0,) * 3, (60.0,) * 3)
    return ClassificationDataset(train, transform, seed=1), InferenceDataset(val, (120.0,) * 3, (60.0,) * 3)


SETTINGS = TrainSettings(epochs=3, batch_size=4, lr=0.05, weight_decay=1e-4, momentum=0.9, poly_power=0.9,
                         new_layer_lr_mult=10, seed=0)


def fresh_model():
    torch.manual_seed(0)
    return build_cam_net("small_cnn", 2, "none", 8)


def test_poly_schedule_values():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = poly_schedule(optimizer, max_steps=10, power=0.9)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(lrs, [0.1 * (1 - s / 10) ** 0.9 for s in range(10)])


def test_mean_average_precision_known_answers():
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    assert mean_average_precision(labels.astype(float), labels) == 1.0
    # class 0 ranked: 0.9 (pos), 0.8 (neg), 0.7 (pos) -> AP = (1 + 2/3) / 2; class 1 perfect
    scores = np.array([[0.9, 0.1], [0.8, 0.9], [0.7, 0.2], [0.1, 0.3]])
    assert mean_average_precision(scores, labels) == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)


def test_training_logs_and_resumes_exactly(tiny_sets, tmp_path):
    train_set, val_set = tiny_sets
    reference = fresh_model()
    rows = train_classifier(reference, train_set, val_set, SETTINGS, BASELINE, torch.device("cpu"),
                            tmp_path / "ref.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(0 <= r["val_map"] <= 1 for r in rows)
    assert rows[-1]["lr"] == 0.0

    class Preempted(Exception):
        pass

    def preempt_in_epoch_two(row):
        if row["epoch"] == 2:
            raise Preempted  # as if the job hit its time limit before epoch 2 was saved

    interrupted, state = fresh_model(), tmp_path / "state" / "resume.pt"
    with pytest.raises(Preempted):
        train_classifier(interrupted, train_set, val_set, SETTINGS, BASELINE, torch.device("cpu"),
                         tmp_path / "run.csv", state, on_epoch_end=preempt_in_epoch_two)
    assert state.is_file()
    resumed = fresh_model()  # a new process: only the saved state carries over
    resumed_rows = train_classifier(resumed, train_set, val_set, SETTINGS, BASELINE, torch.device("cpu"),
                                    tmp_path / "run.csv", state)
    assert not state.exists()  # removed once training completes
    assert [r["epoch"] for r in resumed_rows] == [1, 2, 3]
    for a, b in zip(rows, resumed_rows):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert (tmp_path / "run.csv").read_text().count("\n") == 4  # header + 3 epochs


def test_max_steps_stops_mid_epoch_with_the_poly_decay_spanning_it(tiny_sets, tmp_path):
    train_set, _ = tiny_sets  # 16 images, batch 4: 4 steps per epoch
    calls = []

    def counting_loss(model, images, labels, generator):
        calls.append(len(images))
        return BASELINE(model, images, labels, generator)

    settings = TrainSettings(epochs=100, batch_size=4, lr=0.05, weight_decay=0.0, momentum=0.0, poly_power=1.0,
                             new_layer_lr_mult=10, seed=0, max_steps=6)
    assert settings.total_steps(4) == 6 and SETTINGS.total_steps(4) == 12
    rows = train_classifier(fresh_model(), train_set, None, settings, counting_loss, torch.device("cpu"),
                            tmp_path / "log.csv")
    assert len(calls) == 6  # one full epoch of 4 steps, then 2 of the second
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["lr"] == pytest.approx(0.05 * (1 - 4 / 6)) and rows[1]["lr"] == 0.0
