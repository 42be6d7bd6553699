import math

import pytest
import torch
import torch.nn.functional as F

from wsss_lib.losses import (concentration_loss, concentration_loss_reference, mixed_multilabel_loss,
                             prediction_entropy)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- mixup loss -------------------------------------------------------------------------------

def soft_margin_by_hand(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label soft-margin loss from its definition, in float64 for an independent check."""
    z, y = logits.double(), labels.double()
    per_class = -(y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z)))
    return per_class.mean(dim=1).mean()


def test_mixed_multilabel_loss_is_the_lam_weighted_sum_of_both_label_sets():
    logits = torch.randn(5, 4, generator=gen(0))
    labels = (torch.rand(5, 4, generator=gen(1)) > 0.5).float()
    perm = torch.tensor([3, 0, 4, 1, 2])
    lam = 0.3
    expected = lam * soft_margin_by_hand(logits, labels) + (1 - lam) * soft_margin_by_hand(logits, labels[perm])
    got = mixed_multilabel_loss(logits, labels, perm, lam)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    # An FMix mask mean arrives as a 0-d tensor.
    torch.testing.assert_close(mixed_multilabel_loss(logits, labels, perm, torch.tensor(lam)), got)


def test_mixed_multilabel_loss_with_identity_perm_is_the_plain_loss():
    logits = torch.randn(6, 3, generator=gen(2))
    labels = (torch.rand(6, 3, generator=gen(3)) > 0.5).long()  # integer labels are accepted
    identity = torch.arange(6)
    for lam in (0.0, 0.42, 1.0):
        torch.testing.assert_close(mixed_multilabel_loss(logits, labels, identity, lam).double(),
                                   soft_margin_by_hand(logits, labels), rtol=1e-5, atol=1e-6)


def test_mixed_multilabel_loss_rejects_a_mask_as_weight():
    with pytest.raises(ValueError):
        mixed_multilabel_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.arange(2), torch.ones(4, 4))


# --- prediction entropy -----------------------------------------------------------------------

def test_prediction_entropy_matches_the_formula_on_probabilities():
    logits = torch.randn(4, 7, generator=gen(4), dtype=torch.float64) * 3
    p = torch.sigmoid(logits)
    expected = (-(p * torch.log(p) + (1 - p) * torch.log(1 - p))).mean()
    torch.testing.assert_close(prediction_entropy(logits), expected)
    torch.testing.assert_close(prediction_entropy(logits),
                               F.binary_cross_entropy_with_logits(logits, torch.sigmoid(logits)))


def test_prediction_entropy_extremes():
    assert prediction_entropy(torch.zeros(3, 5)).item() == pytest.approx(math.log(2), rel=1e-6)
    saturated = torch.tensor([[40.0, -40.0, 200.0, -200.0]])
    value = prediction_entropy(saturated)
    assert torch.isfinite(value) and value.item() < 1e-12


def test_prediction_entropy_has_a_gradient_wrt_the_logits():
    logits = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(prediction_entropy(logits), logits)
    p = torch.sigmoid(logits.detach())
    torch.testing.assert_close(grad, -logits.detach() * p * (1 - p) / 3)  # d/dz mean H = -z p (1-p) / N
    assert (grad.abs() > 1e-3).all()
    # Pushing logits away from 0 lowers the entropy, so gradient descent sharpens predictions.
    assert (grad.sign() == -logits.detach().sign()).all()


# --- concentration loss -----------------------------------------------------------------------

def single_map(cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return cam[None, None], torch.ones(1, 1)


def blob(size: int, height: int = 15, width: int = 15) -> torch.Tensor:
    cam = torch.zeros(height, width, dtype=torch.float64)
    top, left = (height - size) // 2, (width - size) // 2
    cam[top:top + size, left:left + size] = 1.0
    return cam


def uniform_variance(size: int) -> float:
    """Variance of the coordinates 2 i / size - 1, i = 0 .. size - 1: (2 / size)^2 (size^2 - 1) / 12."""
    return (size ** 2 - 1) / (3 * size ** 2)


def test_one_pixel_map_has_no_spread_without_eps():
    cam = torch.zeros(9, 11, dtype=torch.float64)
    cam[6, 2] = 3.5
    assert concentration_loss(*single_map(cam), eps=0.0).item() == pytest.approx(0.0, abs=1e-12)


def test_eps_spreads_a_one_pixel_map_towards_uniform():
    """p = (m + eps) / (1 + eps n): a mixture of a point mass (weight w = 1 / (1 + eps n)) and the uniform
    grid (1 - w); its variance per axis is w (1 - w) (c - mean)^2 + (1 - w) var_uniform."""
    height = width = 8
    cam = torch.zeros(height, width, dtype=torch.float64)
    cam[0, 0] = 1.0  # the reference's softmaxed maps lie in [0, 1]
    w = 1 / (1 + 1e-3 * height * width)
    corner, mean = -1.0, -1.0 / height  # coordinate of pixel 0 and of the uniform grid's mean
    per_axis = w * (1 - w) * (corner - mean) ** 2 + (1 - w) * uniform_variance(height)
    assert concentration_loss(*single_map(cam)).item() == pytest.approx(2 * per_axis, rel=1e-9)


def test_two_point_map_has_the_known_variance():
    cam = torch.zeros(5, 9, dtype=torch.float64)
    cam[2, 0] = cam[2, 4] = 1.0  # x in {-1, -1 + 8/9} with equal mass: variance (4/9)^2, y constant
    assert concentration_loss(*single_map(cam), eps=0.0).item() == pytest.approx((4 / 9) ** 2, rel=1e-9)


@pytest.mark.parametrize("height,width", [(8, 8), (5, 13), (32, 32)])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_uniform_map_spread_is_the_closed_form_in_unit_coordinates(height, width, eps):
    cam = torch.full((height, width), 0.7, dtype=torch.float64)
    expected = uniform_variance(height) + uniform_variance(width)
    assert concentration_loss(*single_map(cam), eps=eps).item() == pytest.approx(expected, rel=1e-9)


def test_loss_does_not_grow_with_resolution():
    """The same shape at 16x16 and 32x32 has about the same spread (unlike pixel coordinates: 4x)."""
    coarse, fine = blob(8, 16, 16), blob(16, 32, 32)
    values = [concentration_loss(*single_map(cam)).item() for cam in (coarse, fine)]
    assert values[1] == pytest.approx(values[0], rel=0.02)


def test_spread_grows_with_blob_size():
    small, large = (concentration_loss(*single_map(blob(s)), eps=0.0).item() for s in (3, 7))
    uniform = concentration_loss(*single_map(torch.ones(15, 15, dtype=torch.float64))).item()
    # A k x k square blob on a 15 x 15 grid has spread 2 (k^2 - 1) / 12 * (2 / 15)^2.
    scale = (2 / 15) ** 2
    assert small == pytest.approx(2 * 8 / 12 * scale, rel=1e-9)
    assert large == pytest.approx(2 * 48 / 12 * scale, rel=1e-9)
    assert small < large < uniform


def test_loss_sums_over_present_classes_and_averages_over_the_batch():
    cams = torch.zeros(2, 3, 15, 15, dtype=torch.float64)
    cams[0, 0], cams[0, 2], cams[1, 1] = blob(3), blob(7), torch.ones(15, 15)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    expected = (2 * 8 / 12 + 2 * 48 / 12 + 2 * 224 / 12) * (2 / 15) ** 2 / 2
    assert concentration_loss(cams, labels, eps=0.0).item() == pytest.approx(expected, rel=1e-9)


def test_absent_classes_contribute_nothing():
    cams = torch.rand(3, 4, 10, 12, generator=gen(5))
    labels = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]])
    changed = cams.clone()
    changed[labels == 0] = torch.rand(int((labels == 0).sum()), 10, 12, generator=gen(6)) * 50
    torch.testing.assert_close(concentration_loss(changed, labels), concentration_loss(cams, labels))
    assert concentration_loss(cams, torch.zeros(3, 4)).item() == 0.0


def test_soft_labels_count_as_present_above_one_half():
    cams = torch.rand(2, 3, 6, 6, generator=gen(7))
    soft = torch.tensor([[0.3, 0.0, 0.9], [0.0, 0.5, 0.6]])
    hard = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # mva-wsss: outputs[b] > 0.5
    torch.testing.assert_close(concentration_loss(cams, soft), concentration_loss(cams, hard))


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (4, 6, 16, 9), (8, 20, 32, 32)])
def test_vectorised_matches_reference_loop_in_value_and_gradient(shape):
    seed = sum(shape)
    cams = (torch.rand(shape, generator=gen(seed), dtype=torch.float64) ** 3).requires_grad_()
    labels = (torch.rand(shape[:2], generator=gen(seed + 1)) > 0.5).float()
    labels[0, 0] = 1.0  # at least one present class, so the reference has a graph to differentiate
    fast, slow = concentration_loss(cams, labels), concentration_loss_reference(cams, labels)
    torch.testing.assert_close(fast, slow)
    (grad_fast,) = torch.autograd.grad(fast, cams)
    (grad_slow,) = torch.autograd.grad(slow, cams)
    torch.testing.assert_close(grad_fast, grad_slow)
    if shape[-2] * shape[-1] > 1:  # a one-pixel map has zero spread whatever its value
        assert grad_fast.abs().sum() > 0


def test_float32_maps_far_from_the_origin_stay_accurate():
    cam = torch.zeros(64, 64)
    cam[60:63, 60:63] = 1.0  # centred form avoids E[y^2] - mu^2 cancellation (0.9^2 vs spread 6.5e-4)
    expected = 2 * 8 / 12 * (2 / 64) ** 2
    assert concentration_loss(*single_map(cam), eps=0.0).item() == pytest.approx(expected, rel=1e-4)
