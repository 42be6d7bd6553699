"""Pair sets, pair labels, affinities and the PSA loss, checked by hand or by a direct loop."""

import math

import numpy as np
import pytest
import torch

from wsss_lib.affinity import (IGNORE, _overlap, affinity_loss, neighbour_offsets, pair_affinities, pair_labels,
                               shifted_pairs, valid_pairs)


def test_offsets_radius_2_by_hand():
    # dy^2 + dx^2 < 4 in the half plane: right, down-left, down, down-right
    assert neighbour_offsets(2) == ((0, 1), (1, -1), (1, 0), (1, 1))


def test_offsets_radius_5_is_psa_set():
    offsets = neighbour_offsets(5)
    assert len(offsets) == 34  # PSA's 34 search offsets
    assert len(set(offsets)) == 34
    # each unordered pair once: no offset together with its opposite, and every close offset covered
    close = {(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5) if 0 < dy * dy + dx * dx < 25}
    assert set(offsets) | {(-dy, -dx) for dy, dx in offsets} == close
    assert not set(offsets) & {(-dy, -dx) for dy, dx in offsets}


def test_radius_below_two_rejected():
    with pytest.raises(ValueError, match="radius"):
        neighbour_offsets(1)


def test_pair_labels_toy_map_by_hand():
    # 2 x 3 map, radius 2 -> offsets right, down-left, down, down-right
    #   0 1 1
    #   0 255 2
    labels = torch.tensor([[0, 1, 1], [0, IGNORE, 2]])
    bg, fg, neg = (m.numpy().astype(int) for m in pair_labels(labels, neighbour_offsets(2)))
    # pairs (from -> to) worked out by hand:
    # right:      (0,0)-(0,1) 0|1 neg; (0,1)-(0,2) 1|1 fg; (1,0)-(1,1) ignored; (1,1)-(1,2) ignored
    # down-left:  (0,1)-(1,0) 1|0 neg; (0,2)-(1,1) ignored
    # down:       (0,0)-(1,0) 0|0 bg;  (0,1)-(1,1) ignored; (0,2)-(1,2) 1|2 neg
    # down-right: (0,0)-(1,1) ignored; (0,1)-(1,2) 1|2 neg
    expect_bg = np.zeros((4, 2, 3), int)
    expect_fg = np.zeros((4, 2, 3), int)
    expect_neg = np.zeros((4, 2, 3), int)
    expect_neg[0, 0, 0] = 1
    expect_fg[0, 0, 1] = 1
    expect_neg[1, 0, 1] = 1
    expect_bg[2, 0, 0] = 1
    expect_neg[2, 0, 2] = 1
    expect_neg[3, 0, 1] = 1
    np.testing.assert_array_equal(bg, expect_bg)
    np.testing.assert_array_equal(fg, expect_fg)
    np.testing.assert_array_equal(neg, expect_neg)


def test_pair_sets_are_disjoint_and_cover_known_in_map_pairs():
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.choice([0, 1, 2, IGNORE], size=(2, 7, 9)))
    offsets = neighbour_offsets(3)
    bg, fg, neg = pair_labels(labels, offsets)
    assert bg.shape == (2, len(offsets), 7, 9)
    total = bg + fg + neg
    assert total.max() <= 1
    # count the known in-map pairs with a direct loop
    expected = 0
    lab = labels.numpy()
    for b in range(2):
        for y in range(7):
            for x in range(9):
                for dy, dx in offsets:
                    ty, tx = y + dy, x + dx
                    if 0 <= ty < 7 and 0 <= tx < 9 and lab[b, y, x] != IGNORE and lab[b, ty, tx] != IGNORE:
                        expected += 1
    assert int(total.sum()) == expected


def test_shifted_pairs_and_valid_pairs_agree_with_a_loop():
    values = torch.arange(20.0).reshape(4, 5)
    offsets = neighbour_offsets(3)
    first, second = shifted_pairs(values, offsets, fill=-1.0)
    valid = valid_pairs(4, 5, offsets)
    for o, (dy, dx) in enumerate(offsets):
        for y in range(4):
            for x in range(5):
                inside = 0 <= y + dy < 4 and 0 <= x + dx < 5
                assert valid[o, y, x] == inside
                assert first[o, y, x] == values[y, x]
                assert second[o, y, x] == (values[y + dy, x + dx] if inside else -1.0)


def test_pair_affinities_against_direct_formula():
    torch.manual_seed(0)
    embedding = torch.rand(2, 5, 4, 6)
    offsets = neighbour_offsets(3)
    affinity = pair_affinities(embedding, offsets)
    assert affinity.shape == (2, len(offsets), 4, 6)
    for b in range(2):
        for o, (dy, dx) in enumerate(offsets):
            for y in range(4):
                for x in range(6):
                    ty, tx = y + dy, x + dx
                    if 0 <= ty < 4 and 0 <= tx < 6:
                        expected = math.exp(-float((embedding[b, :, y, x] - embedding[b, :, ty, tx]).abs().mean()))
                        assert affinity[b, o, y, x].item() == pytest.approx(expected, rel=1e-6)
                    else:
                        assert affinity[b, o, y, x].item() == 0.0


def test_affinity_loss_toy_case_by_hand():
    # one pair of each kind plus an unlabelled one: affinities 0.5 (bg+), 0.8 (fg+), 0.1 (neg), 0.9 (none)
    affinity = torch.tensor([0.5, 0.8, 0.1, 0.9])
    bg = torch.tensor([1.0, 0, 0, 0])
    fg = torch.tensor([0, 1.0, 0, 0])
    neg = torch.tensor([0, 0, 1.0, 0])
    loss, parts = affinity_loss(affinity, bg, fg, neg, eps=0.0)
    expected_bg, expected_fg, expected_neg = -math.log(0.5), -math.log(0.8), -math.log(0.9)
    assert float(parts["bg_loss"]) == pytest.approx(expected_bg)
    assert float(parts["fg_loss"]) == pytest.approx(expected_fg)
    assert float(parts["neg_loss"]) == pytest.approx(expected_neg)
    assert loss.item() == pytest.approx(expected_bg / 4 + expected_fg / 4 + expected_neg / 2)


def test_affinity_loss_is_balanced_per_set():
    # doubling the number of background pairs (same values) leaves the loss unchanged
    affinity = torch.tensor([0.5, 0.8, 0.1])
    one = affinity_loss(affinity, torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), torch.tensor([0, 0, 1.0]),
                        eps=0.0)[0]
    affinity2 = torch.tensor([0.5, 0.5, 0.8, 0.1])
    two = affinity_loss(affinity2, torch.tensor([1.0, 1, 0, 0]), torch.tensor([0, 0, 1.0, 0]),
                        torch.tensor([0, 0, 0, 1.0]), eps=0.0)[0]
    assert one.item() == pytest.approx(two.item(), rel=1e-6)


def test_affinity_loss_gradient_pulls_the_right_way():
    affinity = torch.tensor([0.5, 0.5, 0.5], requires_grad=True)
    loss, _ = affinity_loss(affinity, torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]), torch.tensor([0, 0, 1.0]))
    loss.backward()
    # positives want a higher affinity (negative gradient), the negative pair a lower one
    assert affinity.grad[0] < 0 and affinity.grad[1] < 0 and affinity.grad[2] > 0


def test_pair_affinities_gradient_is_autograds():
    """The hand-written backward against autograd through the plain formula (one slice pair per offset), on a map
    with exact ties (sign 0) and offsets that leave it; and torch's numerical gradcheck."""
    def by_autograd(embedding, offsets):
        b, _, h, w = embedding.shape
        rows = []
        for dy, dx in offsets:
            ys, yt = _overlap(h, dy)
            xs, xt = _overlap(w, dx)
            row = embedding.new_zeros((b, h, w))
            row[:, ys, xs] = torch.exp(-(embedding[:, :, ys, xs] - embedding[:, :, yt, xt]).abs().mean(1))
            rows.append(row)
        return torch.stack(rows, 1)

    generator = torch.Generator().manual_seed(0)
    embedding = torch.randn(2, 6, 5, 7, generator=generator, dtype=torch.float64)
    embedding[:, :, :, 3] = embedding[:, :, :, 4]  # ties: sign 0 on these channels
    offsets = neighbour_offsets(3)
    upstream = torch.randn(2, len(offsets), 5, 7, generator=generator, dtype=torch.float64)
    grads = []
    for function in (pair_affinities, by_autograd):
        leaf = embedding.clone().requires_grad_(True)
        affinity = function(leaf, offsets)
        (affinity * upstream).sum().backward()
        grads.append((affinity.detach(), leaf.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-12, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-12)
    assert grads[0][1].abs().sum() > 0
    small = torch.randn(1, 3, 3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: pair_affinities(e, neighbour_offsets(2)), (small,))
