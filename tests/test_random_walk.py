"""Sparse random walk (PSA, Ahn & Kwak CVPR 2018, Sec. 3.5) against independent dense computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsss_lib.affinity import neighbour_offsets, shifted_pairs, valid_pairs
from wsss_lib.evaluation import cams_to_labels
from wsss_lib.random_walk import (dense_random_walk, labels_from_scores, pooled_scores, propagate, random_walk,
                                  random_walk_labels, transition_matrix)


def random_affinities(height: int, width: int, offsets, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Affinities in (0, 1] on in-map pairs, 0 elsewhere."""
    generator = torch.Generator().manual_seed(seed)
    values = 1 - torch.rand(len(offsets), height, width, generator=generator, dtype=torch.float64)
    return (values * torch.from_numpy(valid_pairs(height, width, offsets))).to(dtype)


def dense_affinity_matrix(affinities: np.ndarray, offsets, beta: float) -> np.ndarray:
    """A built pair by pair from positions: for p, q look up the stored direction (q - p or p - q)."""
    _, height, width = affinities.shape
    index = {offset: o for o, offset in enumerate(offsets)}
    positions = [(y, x) for y in range(height) for x in range(width)]
    matrix = np.eye(len(positions))
    for i, (py, px) in enumerate(positions):
        for j, (qy, qx) in enumerate(positions):
            if (qy - py, qx - px) in index:
                matrix[i, j] = affinities[index[(qy - py, qx - px)], py, px] ** beta
            elif (py - qy, px - qx) in index:
                matrix[i, j] = affinities[index[(py - qy, px - qx)], qy, qx] ** beta
    return matrix


def test_transition_matrix_is_row_normalised_affinity_matrix():
    offsets = neighbour_offsets(2)
    assert offsets == ((0, 1), (1, -1), (1, 0), (1, 1))
    affinities = random_affinities(3, 4, offsets, seed=0)
    affinities[0, 1, 1] = 0.0  # an in-map pair whose affinity underflowed: still a pair, weight 0
    # Off-map entries carrying garbage must be ignored: pairs come from the geometry, not the value.
    garbage = affinities.clone()
    garbage[torch.from_numpy(~valid_pairs(3, 4, offsets))] = 0.7

    transition = transition_matrix(garbage, offsets, beta=2.0)
    assert transition.layout == torch.sparse_csr
    assert transition.dtype == torch.float64
    dense = transition.to_dense().numpy()
    np.testing.assert_allclose(dense.sum(1), 1.0, atol=1e-12)

    matrix = dense_affinity_matrix(affinities.numpy(), offsets, beta=2.0)
    np.testing.assert_allclose(matrix, matrix.T)
    np.testing.assert_allclose(dense, matrix / matrix.sum(1, keepdims=True), atol=1e-12)
    pairs = int(valid_pairs(3, 4, offsets).sum())
    assert transition.values().numel() == 12 + 2 * pairs


@pytest.mark.parametrize("exp_times", [8, 3])
def test_random_walk_matches_dense_psa_walk(exp_times):
    offsets = neighbour_offsets(5)
    affinities = random_affinities(9, 11, offsets, seed=1)
    generator = torch.Generator().manual_seed(2)
    scores = torch.rand(4, 9, 11, generator=generator, dtype=torch.float64)

    sparse = random_walk(scores, affinities, offsets, beta=8.0, exp_times=exp_times)
    dense = dense_random_walk(scores, affinities, offsets, beta=8.0, exp_times=exp_times)
    assert sparse.shape == dense.shape == (4, 9, 11)
    np.testing.assert_allclose(sparse.numpy(), dense.numpy(), rtol=0, atol=1e-5)
    assert torch.equal(sparse.argmax(0), dense.argmax(0))
    # The walk moved the scores: the comparison is not trivially of the inputs.
    assert (sparse - scores).abs().max() > 1e-2


def test_exp_times_zero_is_one_step():
    offsets = neighbour_offsets(3)
    affinities = random_affinities(5, 6, offsets, seed=3)
    scores = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    walked = random_walk(scores, affinities, offsets, beta=3.0, exp_times=0)
    transition = transition_matrix(affinities, offsets, beta=3.0)
    one_step = (transition.to_dense() @ scores.reshape(3, -1).T).T.reshape(3, 5, 6)
    torch.testing.assert_close(walked, one_step)
    torch.testing.assert_close(walked, propagate(scores, transition, 1))
    torch.testing.assert_close(walked, dense_random_walk(scores, affinities, offsets, 3.0, 0))
    torch.testing.assert_close(propagate(scores, transition, 0), scores)


def test_uniform_affinity_converges_to_degree_weighted_mean():
    """With A symmetric, the chain's stationary distribution is proportional to the degree, so
    (D^-1 A)^n x -> sum_i d_i x_i / sum_i d_i at every position."""
    offsets = neighbour_offsets(5)
    height, width = 6, 7
    affinities = torch.from_numpy(valid_pairs(height, width, offsets)).double()
    scores = torch.rand(2, height, width, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    positions = [(y, x) for y in range(height) for x in range(width)]
    degree = torch.tensor([sum((py - qy) ** 2 + (px - qx) ** 2 < 25 for qy, qx in positions)
                           for py, px in positions], dtype=torch.float64)  # counts itself: the self-affinity
    expected = (scores.reshape(2, -1) * degree).sum(1) / degree.sum()

    walked = random_walk(scores, affinities, offsets, beta=8.0, exp_times=10)
    torch.testing.assert_close(walked, expected[:, None, None].expand_as(walked), rtol=0, atol=1e-9)
    assert not torch.allclose(expected, scores.reshape(2, -1).mean(1))  # the degree weighting matters


def region_toy(stride: int = 4):
    """Two regions, left / right of map column 6, with affinity 1 inside and 1e-3 across. Each region
    has strong CAM evidence (1.0) for its own class only in one corner and weak evidence (0.1)
    elsewhere, so before the walk the weak parts lose to the background (0.9^16 = 0.185)."""
    offsets = neighbour_offsets(5)
    height, width = 38, 45  # not multiples of the stride: exercises the padding and the crop
    map_h, map_w = math.ceil(height / stride), math.ceil(width / stride)
    region = (torch.arange(map_w) >= 6).long().expand(map_h, map_w)
    first, second = shifted_pairs(region, offsets, fill=-1)
    affinities = torch.where(first == second, 1.0, 1e-3).double()
    affinities *= torch.from_numpy(valid_pairs(map_h, map_w, offsets))

    boundary = 6 * stride  # pixel column of the region boundary
    cams = np.zeros((2, height, width), np.float32)
    cams[0, :, :boundary] = 0.1
    cams[0, :12, :12] = 1.0  # top-left corner of the left region
    cams[1, :, boundary:] = 0.1
    cams[1, -12:, -12:] = 1.0  # bottom-right corner of the right region
    return cams, np.array([6, 14]), affinities, offsets, boundary


def test_random_walk_labels_spread_within_region_only():
    cams, keys, affinities, offsets, boundary = region_toy()
    before = np.argmax(np.concatenate([(1 - cams.max(0, keepdims=True)) ** 16, cams]), 0)
    assert (before[:, :boundary] == 1).mean() < 0.2  # the class starts in its corner only

    labels = random_walk_labels(cams, keys, affinities, offsets, stride=4, alpha=16, beta=8, exp_times=8)
    assert labels.shape == (38, 45) and labels.dtype == np.uint8
    margin = 4  # bilinear upsampling blends one stride across the boundary (background can win there)
    assert (labels[:, :boundary - margin] == 7).all()
    assert (labels[:, boundary + margin:] == 15).all()
    assert not (labels[:, :boundary] == 15).any() and not (labels[:, boundary:] == 7).any()


def test_same_pipeline_without_walk_keeps_background():
    """The toy's pooled scores labelled directly (no walk): the weak parts stay background, so the
    spreading above is the walk's doing."""
    cams, keys, affinities, offsets, _ = region_toy()
    scores = pooled_scores(cams, tuple(affinities.shape[-2:]), 4, 16, dtype=affinities.dtype)
    labels = labels_from_scores(scores, cams.shape[-2:], 4, keys)
    assert (labels == 0).mean() > 0.5


def irn_reference_labels(cams, keys, affinities, offsets, stride, threshold, beta, exp_times) -> np.ndarray:
    """IRN's background written out from the dense walk: pool each class map by stride-blocks (numpy, zero
    padding), walk, upsample, crop, divide by the maximum, prepend the constant, argmax."""
    k, height, width = cams.shape
    map_h, map_w = affinities.shape[-2:]
    padded = np.zeros((k, map_h * stride, map_w * stride))
    padded[:, :height, :width] = cams
    pooled = padded.reshape(k, map_h, stride, map_w, stride).mean((2, 4))
    walked = dense_random_walk(torch.from_numpy(pooled), affinities, offsets, beta, exp_times)
    up = torch.nn.functional.interpolate(walked[None], scale_factor=stride, mode="bilinear",
                                         align_corners=False)[0, :, :height, :width].numpy()
    scores = np.concatenate([np.full((1, height, width), threshold), up / up.max()])
    return np.concatenate([[0], keys + 1])[scores.argmax(0)].astype(np.uint8)


def test_threshold_background_matches_irn_reference():
    offsets = neighbour_offsets(4)
    affinities = random_affinities(6, 7, offsets, seed=12)
    cams = 0.2 * np.random.default_rng(13).random((3, 22, 27)).astype(np.float32)
    cams[0, :11, :13] += 0.8  # one class per quadrant; the bottom-right one is left to the background
    cams[1, :11, 13:] += 0.6
    cams[2, 11:, :13] += 0.5
    keys = np.array([0, 9, 19])
    labels = random_walk_labels(cams, keys, affinities, offsets, 4, None, 8, 2, background_threshold=0.3)
    expected = irn_reference_labels(cams, keys, affinities, offsets, 4, 0.3, 8, 2)
    np.testing.assert_array_equal(labels, expected)
    assert len(np.unique(labels)) == 4  # background and the three classes all occur: the comparison has teeth


def test_threshold_background_fills_regions_and_ignores_cam_scale():
    """The toy's weak evidence (0.1) is below IRN's 0.25 on its own; walked within each region it averages to
    0.24 (left) and 0.26 (right), which divided by the maximum fill their regions. Dividing by the maximum
    makes the labels blind to the CAMs' overall scale, which PSA's (1 - max)^alpha background is not."""
    cams, keys, affinities, offsets, boundary = region_toy()
    assert (cams_to_labels(cams, keys, 0.25)[:, :boundary] == 7).mean() < 0.2
    labels = random_walk_labels(cams, keys, affinities, offsets, 4, None, 8, 8, background_threshold=0.25)
    margin = 4
    assert (labels[:, :boundary - margin] == 7).all() and (labels[:, boundary + margin:] == 15).all()
    np.testing.assert_array_equal(
        random_walk_labels(cams * 0.5, keys, affinities, offsets, 4, None, 8, 8, background_threshold=0.25), labels)
    assert not np.array_equal(random_walk_labels(cams * 0.5, keys, affinities, offsets, 4, 16, 8, 8),
                              random_walk_labels(cams, keys, affinities, offsets, 4, 16, 8, 8))


def test_threshold_background_without_evidence_is_background():
    offsets = neighbour_offsets(5)
    affinities = random_affinities(10, 12, offsets, seed=14)
    labels = random_walk_labels(np.zeros((2, 38, 45), np.float32), np.array([1, 2]), affinities, offsets, 4, None,
                                8, 8, background_threshold=0.25)
    assert not labels.any()


def test_random_walk_labels_no_classes_is_background():
    offsets = neighbour_offsets(5)
    affinities = random_affinities(10, 12, offsets, seed=6)
    labels = random_walk_labels(np.zeros((0, 38, 45), np.float32), np.zeros(0, np.int64), affinities, offsets,
                                stride=4, alpha=16, beta=8, exp_times=8)
    assert labels.shape == (38, 45) and labels.dtype == np.uint8 and not labels.any()


def test_invalid_inputs_raise():
    offsets = neighbour_offsets(5)
    affinities = random_affinities(10, 12, offsets, seed=7)
    cams = np.zeros((1, 38, 45), np.float32)
    keys = np.array([3])
    with pytest.raises(ValueError, match=r"affinities of shape \(34, 10, 12\) do not fit CAMs of shape \(1, 30, 45\)"):
        random_walk_labels(cams[:, :30], keys, affinities, offsets, 4, 16, 8, 8)
    with pytest.raises(ValueError, match="34 offsets were given"):
        transition_matrix(affinities[:-1], offsets, 8)
    with pytest.raises(ValueError, match="beta must be > 0, got 0"):
        random_walk(torch.zeros(2, 10, 12), affinities, offsets, 0, 8)
    with pytest.raises(ValueError, match="exp_times must be an integer >= 0, got -1"):
        random_walk(torch.zeros(2, 10, 12), affinities, offsets, 8, -1)
    with pytest.raises(ValueError, match="do not match affinities"):
        random_walk(torch.zeros(2, 10, 11), affinities, offsets, 8, 1)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        random_walk_labels(cams, keys, affinities, offsets, 4, 0, 8, 8)
    with pytest.raises(ValueError, match="not both or neither; got alpha=16, background_threshold=0.25"):
        random_walk_labels(cams, keys, affinities, offsets, 4, 16, 8, 8, background_threshold=0.25)
    with pytest.raises(ValueError, match="not both or neither; got alpha=None, background_threshold=None"):
        random_walk_labels(cams, keys, affinities, offsets, 4, None, 8, 8)
    with pytest.raises(ValueError, match=r"background_threshold must be in \(0, 1\), got 1.0"):
        random_walk_labels(cams, keys, affinities, offsets, 4, None, 8, 8, background_threshold=1.0)
    with pytest.raises(ValueError, match="1 keys for 2 CAMs"):
        random_walk_labels(np.zeros((2, 38, 45)), keys, affinities, offsets, 4, 16, 8, 8)


def test_float32_and_float64_agree():
    offsets = neighbour_offsets(5)
    affinities = random_affinities(9, 11, offsets, seed=8)
    scores = torch.rand(4, 9, 11, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    walked64 = random_walk(scores, affinities, offsets, beta=8.0, exp_times=8)
    walked32 = random_walk(scores.float(), affinities.float(), offsets, beta=8.0, exp_times=8)
    assert walked64.dtype == torch.float64 and walked32.dtype == torch.float32
    np.testing.assert_allclose(walked32.numpy(), walked64.numpy(), rtol=0, atol=1e-5)
    assert torch.equal(walked32.argmax(0), walked64.argmax(0))

    cams, keys, region_affinities, offsets, _ = region_toy()
    labels64 = random_walk_labels(cams, keys, region_affinities, offsets, 4, 16, 8, 8)
    labels32 = random_walk_labels(cams, keys, region_affinities.float(), offsets, 4, 16, 8, 8)
    np.testing.assert_array_equal(labels32, labels64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    offsets = neighbour_offsets(5)
    affinities = random_affinities(9, 11, offsets, seed=10, dtype=torch.float32)
    scores = torch.rand(4, 9, 11, generator=torch.Generator().manual_seed(11))
    cpu = random_walk(scores, affinities, offsets, 8.0, 8)
    gpu = random_walk(scores.cuda(), affinities.cuda(), offsets, 8.0, 8)
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
    cams, keys, region_affinities, offsets, _ = region_toy()
    np.testing.assert_array_equal(random_walk_labels(cams, keys, region_affinities.cuda(), offsets, 4, 16, 8, 8),
                                  random_walk_labels(cams, keys, region_affinities, offsets, 4, 16, 8, 8))


def test_cpu_thread_limit_gives_same_result_and_restores_setting():
    offsets = neighbour_offsets(5)
    affinities = random_affinities(9, 11, offsets, seed=12)
    scores = torch.rand(4, 9, 11, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    threads = torch.get_num_threads()
    single = random_walk(scores, affinities, offsets, 8.0, 5)
    assert torch.get_num_threads() == threads
    torch.testing.assert_close(random_walk(scores, affinities, offsets, 8.0, 5, cpu_threads=None), single)
    with pytest.raises(ValueError, match="cpu_threads must be an integer >= 1 or None, got 0"):
        random_walk(scores, affinities, offsets, 8.0, 5, cpu_threads=0)
    assert torch.get_num_threads() == threads
