"""Random walk on AffinityNet's affinities, with a sparse transition matrix.

PSA (Ahn & Kwak, CVPR 2018, "Learning Pixel-level Semantic Affinity with Image-level Supervision",
Sec. 3.5, Eq. 7-8, and PSA's ``infer_aff.py``) builds the dense (hw x hw) affinity matrix
``A[i, j] = a_ij^beta`` for pairs within the radius (``A[i, i] = 1``), the column-normalised
transition ``T = A D^-1``, squares it ``exp_times`` times and propagates the CAM scores
``vec(cam) @ T^(2^exp_times)``. The dense matrix and its squarings cost O((hw)^2) memory and
O((hw)^3 exp_times) time (1.1 GB per float64 matrix at stride 4 on a VOC image).

A is symmetric, so ``(s @ T^n)^T = (D^-1 A)^n s^T``: we apply the row-normalised sparse
``P = D^-1 A`` n = 2^exp_times times to the (hw, C) score matrix instead. Memory stays
O(nnz) = O(hw (2 n_offsets + 1)); time is O(2^exp_times nnz C), which is small for PSA's
exp_times = 8 (see benchmarks/random_walk.py).

Affinities come as ``(n_offsets, h, w)`` over the half-plane offsets of
:func:`wsss_lib.affinity.neighbour_offsets` (every unordered pair once); which entries are pairs is
decided by the geometry (:func:`wsss_lib.affinity.valid_pairs`), never by the value, because a real
affinity raised to beta can underflow to 0.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from wsss_lib.affinity import valid_pairs

Offsets = Sequence[tuple[int, int]]


def _check_affinities(affinities: torch.Tensor, offsets: Offsets, beta: float) -> None:
    if affinities.ndim != 3:
        raise ValueError(f"affinities must be (n_offsets, h, w), got shape {tuple(affinities.shape)}")
    if affinities.shape[0] != len(offsets):
        raise ValueError(f"affinities have {affinities.shape[0]} offsets but {len(offsets)} offsets were given")
    if not affinities.is_floating_point():
        raise ValueError(f"affinities must be a floating-point tensor, got {affinities.dtype}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")


def _check_exp_times(exp_times: int) -> None:
    if isinstance(exp_times, bool) or int(exp_times) != exp_times or exp_times < 0:
        raise ValueError(f"exp_times must be an integer >= 0, got {exp_times}")


def pair_indices(height: int, width: int, offsets: Offsets,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every in-map pair as ``(entry, first, second)``: ``entry`` indexes the flattened
    (n_offsets, h, w) affinity array, ``first``/``second`` are the flat (y * w + x) positions of the
    pair. Built by index arithmetic over the whole map, no per-pixel loop."""
    valid = torch.from_numpy(valid_pairs(height, width, offsets)).to(device)
    entry = valid.flatten().nonzero().squeeze(1)
    first = entry % (height * width)
    # Row-major flattening turns the 2-D offset into one constant flat shift per offset.
    shift = torch.tensor([dy * width + dx for dy, dx in offsets], dtype=torch.long, device=device)
    second = first + shift[entry // (height * width)]
    return entry, first, second


def transition_matrix(affinities: torch.Tensor, offsets: Offsets, beta: float) -> torch.Tensor:
    """Row-normalised sparse (CSR) transition matrix ``P = D^-1 A`` on affinities' device/dtype.

    ``A`` holds ``a^beta`` for both directions of every in-map pair and 1 on the diagonal (PSA's
    self-affinity), ``D`` its row sums; shape (hw, hw), nnz = hw + 2 * (number of pairs).
    """
    _check_affinities(affinities, offsets, beta)
    if bool((affinities < 0).any()) or not bool(torch.isfinite(affinities).all()):
        raise ValueError("affinities must be finite and >= 0 (a^beta of a negative affinity is undefined)")
    _, height, width = affinities.shape
    size = height * width
    device, dtype = affinities.device, affinities.dtype
    entry, first, second = pair_indices(height, width, offsets, device)
    weight = affinities.reshape(-1)[entry] ** beta
    diagonal = torch.arange(size, device=device)
    rows = torch.cat([first, second, diagonal])
    cols = torch.cat([second, first, diagonal])
    values = torch.cat([weight, weight, torch.ones(size, dtype=dtype, device=device)])
    degree = torch.zeros(size, dtype=dtype, device=device).index_add_(0, rows, values)
    values = values / degree[rows]

    # CSR wants rows grouped and columns sorted within a row; pairs are unique, so one sort suffices.
    order = torch.argsort(rows * size + cols)
    crow = torch.zeros(size + 1, dtype=torch.long, device=device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=size), 0)
    with warnings.catch_warnings():
        # torch flags every CSR construction as "beta"; the ops used here (CSR @ dense) are stable.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return torch.sparse_csr_tensor(crow, cols[order], values[order], (size, size), check_invariants=False)


@contextmanager
def cpu_thread_limit(device: torch.device, threads: int | None) -> Iterator[None]:
    """Run torch's CPU ops on ``threads`` threads inside the block (no-op off the CPU or for None).

    torch's thread count is process-wide, so it is restored on exit."""
    if threads is not None and (isinstance(threads, bool) or int(threads) != threads or threads < 1):
        raise ValueError(f"cpu_threads must be an integer >= 1 or None, got {threads}")
    if torch.device(device).type != "cpu" or threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def propagate(scores: torch.Tensor, transition: torch.Tensor, steps: int,
              cpu_threads: int | None = 1) -> torch.Tensor:
    """scores (C, h, w) -> (C, h, w) after ``steps`` applications of the transition (sparse matmuls).

    Computed on the transition's device and dtype. On the CPU the steps run on ``cpu_threads``
    threads (None: torch's current setting): one step is a small product (47x63 map, C = 21: ~4M
    multiply-adds, ~0.2 ms), too small to amortise OpenMP's fork/join, and when other processes share
    the cores every parallel op waits for a descheduled thread. Measured on 2 cores at load ~4-5:
    256 steps take 0.1 s on 1 thread but 0.24-8 s on 2 (and building the matrix 15 ms vs 0.4 s);
    idle, 2 threads are only ~2x faster (45 vs 94 ms). Hence the default of 1.

    Alternatives measured (47x63 map, radius 5, C = 21, 256 steps, float32, 2 threads, idle machine;
    the dense float32 PSA walk takes 3.3-4.4 s there):
      * torch CSR @ dense (hw, C), used here:    ~45-65 ms (~95 ms on 1 thread)
      * scipy.sparse CSR @ dense:                ~235 ms (single-threaded)
      * scipy, P squared once / twice, then 128 / 64 steps: ~410 / ~740 ms -- squaring a radius-r
        stencil roughly quadruples nnz per row while it only halves the steps, so it never pays
      * torch sparse COO mm:                     ~1.6 s
      * gather of a padded (hw, 69) neighbour table: ~2.7 s
      * 68 shifted-slice multiply-adds per step on (C, h, w): slower still (op overhead)
    On CUDA the same CSR @ dense call runs on cuSPARSE.
    """
    if scores.ndim != 3:
        raise ValueError(f"scores must be (C, h, w), got shape {tuple(scores.shape)}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps}")
    channels, height, width = scores.shape
    if tuple(transition.shape) != (height * width, height * width):
        raise ValueError(f"transition of shape {tuple(transition.shape)} does not fit scores of shape "
                         f"{tuple(scores.shape)} (needs ({height * width}, {height * width}))")
    # (hw, C) keeps each step a single CSR @ dense product, the layout the sparse kernels expect.
    state = scores.to(device=transition.device, dtype=transition.dtype).reshape(channels, -1).T.contiguous()
    with cpu_thread_limit(transition.device, cpu_threads):
        for _ in range(int(steps)):
            state = transition @ state
    return state.T.reshape(channels, height, width)


def random_walk(scores: torch.Tensor, affinities: torch.Tensor, offsets: Offsets, beta: float,
                exp_times: int, cpu_threads: int | None = 1) -> torch.Tensor:
    """PSA's random walk with 2**exp_times steps (equal to exp_times squarings of the dense matrix).

    scores (C, h, w) with (h, w) = affinities.shape[-2:]; returns (C, h, w) on affinities'
    device and dtype. ``cpu_threads``: see :func:`propagate`.
    """
    _check_affinities(affinities, offsets, beta)
    _check_exp_times(exp_times)
    if scores.ndim != 3 or scores.shape[-2:] != affinities.shape[-2:]:
        raise ValueError(f"scores of shape {tuple(scores.shape)} do not match affinities of shape "
                         f"{tuple(affinities.shape)} (need (C, {affinities.shape[1]}, {affinities.shape[2]}))")
    with cpu_thread_limit(affinities.device, cpu_threads):  # the build is many small ops too
        transition = transition_matrix(affinities, offsets, beta)
        return propagate(scores, transition, 2 ** int(exp_times), cpu_threads=None)


def dense_random_walk(scores: torch.Tensor, affinities: torch.Tensor, offsets: Offsets, beta: float,
                      exp_times: int) -> torch.Tensor:
    """The reference, written for clarity: PSA's dense walk (infer_aff.py) in float64 on the CPU.

    Dense A filled by plain Python loops over positions and offsets, column-normalised T,
    exp_times squarings, scores @ T. O((hw)^2) memory: for tests and benchmarks only.
    Returns (C, h, w) float64 on the CPU.
    """
    _check_affinities(affinities, offsets, beta)
    _check_exp_times(exp_times)
    _, height, width = affinities.shape
    channels = scores.shape[0]
    size = height * width
    value = affinities.detach().cpu().double().numpy()
    matrix = np.eye(size)  # numpy: element writes are ~10x cheaper than on a tensor
    for y in range(height):
        for x in range(width):
            for o, (dy, dx) in enumerate(offsets):
                ty, tx = y + dy, x + dx
                if 0 <= ty < height and 0 <= tx < width:
                    a = float(value[o, y, x]) ** beta
                    matrix[y * width + x, ty * width + tx] = a
                    matrix[ty * width + tx, y * width + x] = a
    transition = torch.from_numpy(matrix / matrix.sum(0, keepdims=True))
    for _ in range(int(exp_times)):
        transition = transition @ transition
    vectors = scores.detach().cpu().double().reshape(channels, size)
    return (vectors @ transition).reshape(channels, height, width)


def pooled_scores(cams: np.ndarray, map_size: tuple[int, int], stride: int, alpha: float | None,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The walk's input: (k, H, W) CAMs zero-padded bottom/right to (h * stride, w * stride) and
    average-pooled by stride. With ``alpha`` (PSA), the background score ``(1 - max_c cams)^alpha`` goes
    in front: (k + 1, h, w); with ``alpha=None`` (IRN) the class maps alone: (k, h, w)."""
    height, width = cams.shape[-2:]
    cam = torch.as_tensor(np.asarray(cams), device=device, dtype=dtype)
    if alpha is not None:
        # The clamp keeps a CAM slightly above 1 from giving a negative base (NaN for non-integer alpha).
        background = (1 - cam.amax(0)).clamp(min=0) ** alpha
        cam = torch.cat([background[None], cam])
    pad = (0, map_size[1] * stride - width, 0, map_size[0] * stride - height)
    return F.avg_pool2d(F.pad(cam, pad), stride, stride)


def labels_from_scores(scores: torch.Tensor, image_size: tuple[int, int], stride: int, keys: np.ndarray,
                       background_threshold: float | None = None) -> np.ndarray:
    """Walked scores -> (H, W) uint8 labels: bilinear upsampling to (h * stride, w * stride)
    (align_corners=False), crop to (H, W), argmax; channel 0 -> 0 and channel c -> keys[c-1] + 1.

    Without ``background_threshold`` the scores are PSA's (k + 1, h, w), background first. With it they
    are IRN's (k, h, w) class maps: after the crop they are divided by their maximum over classes and
    pixels, and the constant ``background_threshold`` is put in front as the background score (IRN,
    ``step/make_sem_seg_labels.py``).
    """
    _, height, width = scores.shape
    upsampled = F.interpolate(scores[None], size=(height * stride, width * stride), mode="bilinear",
                              align_corners=False)[0, :, :image_size[0], :image_size[1]]
    if background_threshold is not None:
        # An all-zero map (no evidence left after the walk) stays zero and becomes background.
        upsampled = upsampled / upsampled.max().clamp(min=torch.finfo(upsampled.dtype).tiny)
        upsampled = torch.cat([upsampled.new_full((1, *upsampled.shape[1:]), background_threshold), upsampled])
    lookup = np.concatenate([[0], np.asarray(keys, dtype=np.int64) + 1]).astype(np.uint8)
    return lookup[upsampled.argmax(0).cpu().numpy()]


def random_walk_labels(cams: np.ndarray, keys: np.ndarray, affinities: torch.Tensor, offsets: Offsets,
                       stride: int, alpha: float | None, beta: float, exp_times: int,
                       cpu_threads: int | None = 1, background_threshold: float | None = None) -> np.ndarray:
    """Pseudo-label map (H, W) uint8 for one image: the CAMs walked over the affinities, then arg-maxed
    against a background score, which is one of

    * PSA's (``alpha``; Ahn & Kwak CVPR 2018, ``infer_aff.py``): ``(1 - max_c cams)^alpha`` goes in front
      of the class maps and is walked with them;
    * IRN's (``background_threshold``, ``alpha=None``; Ahn, Cho & Kwak CVPR 2019,
      ``step/make_sem_seg_labels.py``): the class maps alone are walked, divided by their maximum, and
      compared with the constant threshold. A constant is what the walk leaves unchanged (its transition
      is row-stochastic), so mixing across weak object borders cannot tip the balance towards the
      background or the classes, as it can with a power of the CAMs walked alongside them.

    cams: (k, H, W) full-resolution CAMs in [0, 1] of the k present classes (0-based ids ``keys``). The
    maps are zero-padded to (h * stride, w * stride), where (h, w) = affinities.shape[-2:] must be
    (ceil(H/stride), ceil(W/stride)), average-pooled by stride, walked (:func:`random_walk`), upsampled
    bilinearly, cropped to (H, W) and arg-maxed (:func:`labels_from_scores`); channel 0 -> 0, channel c ->
    keys[c-1] + 1. k == 0 -> all zeros. Runs on affinities' device and dtype; returns numpy.
    ``cpu_threads``: see :func:`propagate`.
    """
    cams = np.asarray(cams)
    keys = np.asarray(keys).reshape(-1)
    if cams.ndim != 3:
        raise ValueError(f"cams must be (k, H, W), got shape {cams.shape}")
    if len(keys) != cams.shape[0]:
        raise ValueError(f"{len(keys)} keys for {cams.shape[0]} CAMs")
    if len(keys) and (keys.min() < 0 or keys.max() > 253):
        raise ValueError(f"keys must be 0-based class ids in [0, 253] (labels key + 1 fit uint8), got {keys}")
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride}")
    if (alpha is None) == (background_threshold is None):
        raise ValueError("give the background as alpha (PSA's power) or background_threshold (IRN's), not "
                         f"both or neither; got alpha={alpha}, background_threshold={background_threshold}")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if background_threshold is not None and not 0 < background_threshold < 1:
        raise ValueError(f"background_threshold must be in (0, 1), got {background_threshold}")
    _check_affinities(affinities, offsets, beta)
    _check_exp_times(exp_times)
    height, width = cams.shape[-2:]
    map_size = (math.ceil(height / stride), math.ceil(width / stride))
    if tuple(affinities.shape[-2:]) != map_size:
        raise ValueError(f"affinities of shape {tuple(affinities.shape)} do not fit CAMs of shape {cams.shape} "
                         f"at stride {stride} (need (n_offsets, {map_size[0]}, {map_size[1]}))")
    if len(keys) == 0:
        return np.zeros((height, width), dtype=np.uint8)
    scores = pooled_scores(cams, map_size, int(stride), alpha, affinities.device, affinities.dtype)
    walked = random_walk(scores, affinities, offsets, beta, exp_times, cpu_threads)
    return labels_from_scores(walked, (height, width), int(stride), keys, background_threshold)
