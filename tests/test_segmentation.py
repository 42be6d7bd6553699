"""DeepLab stage helpers (wsss_lib.segmentation): loss, pseudo-label reader, multi-scale inference, CRF."""

from __future__ import annotations

import dataclasses
import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsss_lib.crf import CRFParams
from wsss_lib.data.label_png import write_label_png
from wsss_lib.models.deeplab import build_deeplab
from wsss_lib.segmentation import (DEEPLAB_CRF, PseudoLabelReader, crf_refine, crf_refine_many, predict_probabilities,
                                   segmentation_batch_loss, segmentation_loss)


def numpy_cross_entropy(logits: np.ndarray, labels: np.ndarray, ignore: int = 255) -> float:
    """Mean of -log softmax(z)_y over labelled pixels, written out in float64: (B, C, H, W), (B, H, W)."""
    z = logits.astype(np.float64).transpose(0, 2, 3, 1)[labels != ignore]  # (n, C)
    y = labels[labels != ignore]
    log_norm = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    return float(np.mean(log_norm - z[np.arange(len(y)), y]))


def tiny_deeplab(n_classes: int = 3, head: str = "v2") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_deeplab("small_cnn", n_classes, "none", 8, head)


def confident_deeplab(n_classes: int) -> torch.nn.Module:
    """A tiny DeepLab in eval mode whose probabilities are far from uniform, so that a wrong average shows.

    Untrained, its BatchNorm running statistics are the defaults, under which the features shrink to
    ~1e-4, and DeepLab's N(0, 0.01) head makes the probabilities uniform to 1e-4. One forward in
    training mode with a cumulative average (momentum None) sets the statistics to the batch's;
    the head is redrawn larger.
    """
    net = tiny_deeplab(n_classes)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        net.train()(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    for conv in net.head.branches:
        torch.nn.init.normal_(conv.weight, std=0.1)
    return net.eval()


def test_all_ignored_batch_gives_zero_loss_and_zero_gradient():
    net = tiny_deeplab().train()
    images = torch.randn(2, 3, 32, 24)
    labels = torch.full((2, 32, 24), 255, dtype=torch.int64)
    loss, parts = segmentation_batch_loss()(net, images, labels, torch.Generator())
    loss.backward()
    assert loss.item() == 0.0
    assert {k: float(v) for k, v in parts.items()} == {"ce": 0.0, "labelled_fraction": 0.0}
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in grads)


def test_loss_on_a_hand_made_example_matches_negative_log_softmax():
    logits = torch.tensor([[[[2.0, 0.0], [1.0, -1.0]],
                            [[0.5, 3.0], [1.0, 2.0]],
                            [[-1.0, 1.0], [4.0, 0.0]]]])  # (1, 3, 2, 2)
    labels = torch.tensor([[[0, 255], [2, 1]]])
    # Labelled pixels: (0,0) class 0, (1,0) class 2, (1,1) class 1; (0,1) is ignored.
    z = logits[0].numpy().astype(np.float64)
    expected = np.mean([-(z[c, i, j] - np.log(np.exp(z[:, i, j]).sum())) for (i, j), c in
                        [((0, 0), 0), ((1, 0), 2), ((1, 1), 1)]])
    assert segmentation_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(numpy_cross_entropy(logits.numpy(), labels.numpy()), rel=1e-12)


def test_stride_2_logits_are_upsampled_before_the_loss():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 4, generator=generator)
    labels = torch.randint(0, 4, (2, 6, 8), generator=generator)
    labels[torch.rand(2, 6, 8, generator=generator) < 0.3] = 255
    upsampled = F.interpolate(logits, size=(6, 8), mode="bilinear", align_corners=False)
    expected = numpy_cross_entropy(upsampled.numpy(), labels.numpy())
    assert segmentation_loss(logits, labels).item() == pytest.approx(expected, rel=1e-5)


def test_batch_loss_reports_cross_entropy_and_labelled_fraction():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 3, stride=2, padding=1)
    images = torch.randn(1, 3, 8, 8)
    labels = torch.randint(0, 3, (1, 8, 8))
    labels[0, :2] = 255  # 16 of 64 pixels ignored
    loss, parts = segmentation_batch_loss()(conv, images, labels, torch.Generator())
    with torch.no_grad():
        upsampled = F.interpolate(conv(images), size=(8, 8), mode="bilinear", align_corners=False)
    assert float(parts["ce"]) == pytest.approx(numpy_cross_entropy(upsampled.numpy(), labels.numpy()), rel=1e-5)
    assert float(parts["ce"]) == loss.item()
    assert float(parts["labelled_fraction"]) == 0.75


def test_label_outside_the_classes_is_a_clear_error():
    with pytest.raises(ValueError, match="outside the 3 classes"):
        segmentation_loss(torch.zeros(1, 3, 2, 2), torch.tensor([[[0, 1], [3, 255]]]))


def test_single_scale_probabilities_are_the_softmax_of_upsampled_logits():
    net = confident_deeplab(4)
    image = torch.randn(3, 30, 22)
    probabilities = predict_probabilities(net, image)
    assert probabilities.max() > 0.8 and probabilities.min() < 0.01  # far from uniform (0.25)
    with torch.no_grad():
        expected = F.interpolate(net(image[None]), size=(30, 22), mode="bilinear", align_corners=False).softmax(1)[0]
    assert probabilities.shape == (4, 30, 22)
    torch.testing.assert_close(probabilities, expected, rtol=1e-5, atol=1e-6)


def test_flips_and_scales_average_every_view_computed_one_at_a_time():
    net = confident_deeplab(3)
    image = torch.randn(3, 26, 34)
    scales = (1.0, 0.75, 1.5)
    probabilities = predict_probabilities(net, image, scales, flip=True)
    reference = []
    with torch.no_grad():
        for scale in scales:
            size = (round(26 * scale), round(34 * scale))
            for mirrored in (False, True):
                view = image.flip(-1) if mirrored else image
                view = F.interpolate(view[None], size=size, mode="bilinear", align_corners=False)
                logits = net(view)
                logits = logits.flip(-1) if mirrored else logits
                logits = F.interpolate(logits, size=(26, 34), mode="bilinear", align_corners=False)
                reference.append(logits.softmax(1)[0])
    expected = torch.stack(reference).mean(0)
    torch.testing.assert_close(probabilities, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probabilities.sum(0), torch.ones(26, 34))
    # The mirrored views matter: this untrained net is not flip-symmetric.
    assert not torch.allclose(probabilities, predict_probabilities(net, image, scales, flip=False), atol=0.1)


def test_prediction_refuses_a_model_in_training_mode():
    with pytest.raises(ValueError, match="eval mode"):
        predict_probabilities(tiny_deeplab().train(), torch.randn(3, 16, 16))


def test_crf_with_zero_iterations_is_the_argmax_of_the_normalised_probabilities():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    probabilities = rng.dirichlet(np.ones(4), size=(12, 16)).transpose(2, 0, 1).astype(np.float32)
    clipped = np.clip(probabilities, 1e-5, 1.0)  # pydensecrf's unary_from_softmax clipping
    expected = (clipped / clipped.sum(0)).argmax(0)
    zero = dataclasses.replace(DEEPLAB_CRF, iterations=0)
    labels = crf_refine(image, probabilities, zero)
    assert labels.dtype == np.int64 and labels.shape == (12, 16)
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(crf_refine(image, torch.from_numpy(probabilities), zero), expected)


def test_deeplab_crf_cleans_label_noise_inside_uniform_regions():
    rng = np.random.default_rng(0)
    image = np.full((32, 32, 3), 20, dtype=np.uint8)
    image[8:24, 8:24] = (220, 200, 60)
    truth = np.zeros((32, 32), dtype=np.int64)
    truth[8:24, 8:24] = 1
    # Probabilities that favour the truth at 0.65, but are flipped to 0.35 on 20% of the pixels.
    p_true = np.where(rng.random((32, 32)) < 0.2, 0.35, 0.65)
    probabilities = np.stack([np.where(truth == 0, p_true, 1 - p_true),
                              np.where(truth == 1, p_true, 1 - p_true)]).astype(np.float32)
    noisy_errors = int((probabilities.argmax(0) != truth).sum())
    refined_errors = int((crf_refine(image, probabilities, DEEPLAB_CRF) != truth).sum())
    assert noisy_errors > 100 and refined_errors < noisy_errors // 10


def test_deeplab_crf_maps_deeplabs_names_onto_crfparams():
    deeplab = {"pos_xy_std": 1, "pos_w": 3, "bi_xy_std": 67, "bi_rgb_std": 3, "bi_w": 4}
    assert DEEPLAB_CRF == CRFParams(iterations=10, gaussian_sxy=deeplab["pos_xy_std"],
                                    gaussian_compat=deeplab["pos_w"], bilateral_sxy=deeplab["bi_xy_std"],
                                    bilateral_srgb=deeplab["bi_rgb_std"], bilateral_compat=deeplab["bi_w"])


def test_pseudo_label_reader_round_trip_pickle_and_missing_file(tmp_path):
    labels = np.array([[0, 1, 2], [255, 20, 0]], dtype=np.uint8)
    write_label_png(tmp_path / "2007_000032.png", labels)
    reader = PseudoLabelReader(tmp_path)
    np.testing.assert_array_equal(reader("2007_000032"), labels)
    assert reader("2007_000032").dtype == np.uint8
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone("2007_000032"), labels)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing.png"))):
        reader("missing")


def test_pooled_crf_refinement_equals_the_serial_one(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        image = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        image[:, 16:] = 200  # a flat region the CRF can smooth
        path = tmp_path / f"{i}.png"
        Image.fromarray(image).save(path)
        probabilities = rng.dirichlet(np.ones(3), size=(24, 32)).transpose(2, 0, 1).astype(np.float32)
        items.append((f"id{i}", str(path), probabilities))
    expected = [(image_id, crf_refine(np.asarray(Image.open(path)), probs).astype(np.uint8))
                for image_id, path, probs in items]
    for processes in (1, 2):
        got = list(crf_refine_many(iter(items), DEEPLAB_CRF, processes=processes))
        assert [g[0] for g in got] == [e[0] for e in expected]
        for (_, labels), (_, reference) in zip(got, expected):
            np.testing.assert_array_equal(labels, reference)
    with pytest.raises(ValueError, match="id0"):
        list(crf_refine_many([("id0", items[0][1], items[0][2][:, :10])], DEEPLAB_CRF))
