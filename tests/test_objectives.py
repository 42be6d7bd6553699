import pytest
import torch
import torch.nn.functional as F

from wsss_lib.losses import concentration_loss_reference, prediction_entropy
from wsss_lib.mixing import fmix_mask, random_permutation, sample_lambda
from wsss_lib.models.cam_net import build_cam_net
from wsss_lib.objectives import Objective, build_batch_loss, mixed_features, objective_from_config


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_cam_net("small_cnn", 4, "none", 8).eval()  # eval: BatchNorm independent of the batch


@pytest.fixture
def batch():
    torch.manual_seed(1)
    images = torch.randn(6, 3, 32, 32)
    labels = (torch.rand(6, 4) < 0.5).float()
    labels[:, 0] = 1
    return images, labels


def test_baseline_objective_is_multilabel_soft_margin(model, batch):
    images, labels = batch
    loss, parts = build_batch_loss(Objective())(model, images, labels, torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss, F.multilabel_soft_margin_loss(model(images), labels))
    assert set(parts) == {"cls"}


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_manifold_mixing_at_stage_k_equals_mixing_stage_k_features(model, batch, k):
    images, _ = batch
    objective = Objective(mixing="manifold_mixup", alpha=0.4, manifold_stages=(k,))
    with torch.no_grad():
        features, perm, lam = mixed_features(model, images, objective, torch.Generator().manual_seed(5))
        # independently: the same draws, stage-k features of the whole batch, mixed, then the rest
        generator = torch.Generator().manual_seed(5)
        expected_perm = random_permutation(6, generator)
        expected_lam = sample_lambda(0.4, generator)
        hidden = images
        for stage in model.backbone.stages[:k]:
            hidden = stage(hidden)
        hidden = expected_lam * hidden + (1 - expected_lam) * hidden[expected_perm]
        for stage in model.backbone.stages[k:]:
            hidden = stage(hidden)
    assert torch.equal(perm, expected_perm) and lam == expected_lam
    torch.testing.assert_close(features, hidden)


def test_manifold_stage_zero_is_input_mixup(model, batch):
    images, _ = batch
    with torch.no_grad():
        manifold = mixed_features(model, images, Objective("manifold_mixup", 0.4, manifold_stages=(0,)),
                                  torch.Generator().manual_seed(2))[0]
        mixup = mixed_features(model, images, Objective("mixup", 0.4), torch.Generator().manual_seed(2))[0]
    torch.testing.assert_close(manifold, mixup)


def test_mixup_objective_with_regularisers_equals_hand_computation(model, batch):
    images, labels = batch
    objective = Objective(mixing="mixup", alpha=1.0, entropy_weight=0.02, concentration_weight=2e-4)
    loss, parts = build_batch_loss(objective)(model, images, labels, torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)
    perm, lam = random_permutation(6, generator), sample_lambda(1.0, generator)
    features = model.features(lam * images + (1 - lam) * images[perm])
    logits = model.classifier(F.adaptive_avg_pool2d(features, 1)).flatten(1)
    cls = lam * F.multilabel_soft_margin_loss(logits, labels) + (1 - lam) * F.multilabel_soft_margin_loss(
        logits, labels[perm])
    # mva-wsss train_cam.py: ReLU class maps softmaxed over classes, partners' terms weighted lam / 1 - lam
    maps = torch.softmax(F.relu(model.classifier(features)), dim=1)
    concentration = lam * concentration_loss_reference(maps, labels) + (1 - lam) * concentration_loss_reference(
        maps, labels[perm])
    expected = cls + 0.02 * prediction_entropy(logits) + 2e-4 * concentration
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert set(parts) == {"cls", "entropy", "concentration"}


def test_fmix_weights_the_loss_by_the_mask_mean(model, batch):
    images, labels = batch
    loss, _ = build_batch_loss(Objective(mixing="fmix", alpha=1.0))(model, images, labels,
                                                                    torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    perm, lam = random_permutation(6, generator), sample_lambda(1.0, generator)
    mask = fmix_mask(lam, (32, 32), 3.0, generator)
    logits = model(mask * images + (1 - mask) * images[perm])
    weight = mask.mean()
    expected = weight * F.multilabel_soft_margin_loss(logits, labels) + (1 - weight) * F.multilabel_soft_margin_loss(
        logits, labels[perm])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_objective_from_config_and_bad_values():
    objective = objective_from_config({"mixing": "manifold_mixup", "mix_alpha": 0.2, "manifold_stages": [1, 2],
                                       "entropy_weight": 0.02})
    assert objective == Objective("manifold_mixup", 0.2, 3.0, (1, 2), 0.02, 0.0)
    with pytest.raises(ValueError, match="cutmix"):
        Objective(mixing="cutmix")
    with pytest.raises(ValueError, match="manifold_stages"):
        mixed_features(build_cam_net("small_cnn", 2, "none", 8), torch.randn(2, 3, 16, 16),
                       Objective("manifold_mixup", manifold_stages=(9,)), torch.Generator().manual_seed(0))


def test_subcategory_loss_equals_direct_computation(batch):
    """SC-CAM Sec. 3: parent multi-label loss + weight * multi-label loss over the sub-categories, both on GAP
    logits."""
    images, labels = batch
    torch.manual_seed(2)
    net = build_cam_net("small_cnn", 4, "none", 8, n_subcategories=7).eval()
    sub_labels = torch.zeros(6, 7)
    sub_labels[torch.arange(6), torch.tensor([0, 3, 6, 2, 2, 5])] = 1.0
    loss, parts = build_batch_loss(Objective(subcategory_weight=5.0))(
        net, images, torch.cat([labels, sub_labels], 1), torch.Generator().manual_seed(0))
    pooled = F.adaptive_avg_pool2d(net.features(images), 1)
    parent = F.multilabel_soft_margin_loss(net.classifier(pooled).flatten(1), labels)
    # written out: -mean over classes of [y log sigmoid(z) + (1 - y) log sigmoid(-z)], mean over the batch
    z = net.sub_classifier(pooled).flatten(1)
    sub = -(sub_labels * F.logsigmoid(z) + (1 - sub_labels) * F.logsigmoid(-z)).mean(1).mean()
    torch.testing.assert_close(loss, parent + 5.0 * sub, rtol=1e-5, atol=1e-6)
    assert float(parts["subcategory"]) == pytest.approx(sub.item(), rel=1e-5)


def shipped_objective(method):
    import yaml

    from conftest import REPO
    from wsss_lib.config import method_config

    config = {**yaml.safe_load((REPO / "config" / "config.yaml").read_text()), "dataset": "voc12"}
    hp = method_config(config, method)
    weight = hp["subcategory"]["weight"] if hp["subcategory"]["rounds"] else 0.0
    return objective_from_config(hp["train_cam"], weight)


@pytest.mark.parametrize("method,mixes,regularised,sub_weight", [
    ("baseline", False, False, 0.0), ("mixup", True, True, 0.0), ("manifold_mixup", True, True, 0.0),
    ("fmix", True, True, 0.0), ("fmix_aug", True, True, 0.0), ("sce", False, False, 2.0), ("sct", False, False, 2.0),
    ("sc_cam", False, False, 5.0),
])
def test_each_methods_loss_differs_from_the_baseline_as_its_source_says(model, batch, method, mixes, regularised,
                                                                        sub_weight):
    """On one batch: mixing methods change what the classifier sees (their classification term differs from the
    baseline's); Mixup-CAM's entropy (0.02) and concentration (2e-4) terms appear with their weights; the
    sub-category methods add their term with weight 2 (mva-wsss) or 5 (SC-CAM) and mix nothing."""
    images, labels = batch
    objective = shipped_objective(method)
    torch.manual_seed(3)
    # train mode: batch statistics give the untrained net's features unit scale (its running statistics shrink
    # them to ~1e-4); the heads start at zero, which would make every input's logits equal
    net = build_cam_net("small_cnn", 4, "none", 8, n_subcategories=3 if sub_weight else 0).train()
    with torch.no_grad():
        for head in filter(None, (net.classifier, net.sub_classifier)):
            head.weight.normal_(0.0, 0.5)
    targets = torch.cat([labels, torch.eye(3)[torch.arange(6) % 3]], 1) if sub_weight else labels
    loss, parts = build_batch_loss(objective)(net, images, targets, torch.Generator().manual_seed(4))
    baseline_cls = F.multilabel_soft_margin_loss(net(images), labels).item()
    assert (abs(float(parts["cls"]) - baseline_cls) > 1e-4) == mixes, (float(parts["cls"]), baseline_cls)
    expected = float(parts["cls"])
    if regularised:
        assert set(parts) == {"cls", "entropy", "concentration"}
        expected += 0.02 * float(parts["entropy"]) + 2e-4 * float(parts["concentration"])
    if sub_weight:
        assert set(parts) == {"cls", "subcategory"} and objective.subcategory_weight == sub_weight
        expected += sub_weight * float(parts["subcategory"])
    if not regularised and not sub_weight:
        assert set(parts) == {"cls"}
    assert loss.item() == pytest.approx(expected, rel=1e-5)
