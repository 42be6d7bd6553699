"""Dense-CRF refinement of CAMs into confident pseudo-labels (PSA's affinity labels).

PSA (Ahn & Kwak, "Learning Pixel-level Semantic Affinity with Image-level Supervision",
CVPR 2018, Sec. 3.2) turns the CAMs of the classes present in an image into pixel labels that
are trusted only where they are confident. A background score ``(1 - max_c CAM_c)^alpha`` is
stacked in front of the CAMs and the stack is refined by a fully connected CRF (Krähenbühl &
Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge Potentials",
NeurIPS 2011). Two values of ``alpha`` are used:

* a *low* alpha (PSA: 4) inflates the background score, so a pixel the CRF still assigns to an
  object is confidently that object;
* a *high* alpha (PSA: 32) deflates it, so a pixel the CRF still assigns to the background is
  confidently background.

Every other pixel is ``IGNORE``. The CRF is pydensecrf's ``DenseCRF2D`` with PSA's settings
(Gaussian kernel sxy=3, compat=3; bilateral kernel sxy=80, srgb=13, compat=10; 10 mean-field
iterations).

pydensecrf facts these functions rely on (checked against pydensecrf2 1.1):

* ``unary_from_softmax`` clips the scores to ``[1e-5, 1]`` before taking ``-log``, so a score
  above 1 counts as 1 and a zero score as 1e-5. The scores need not sum to one.
* ``inference(0)`` returns the softmax of the negative unary, i.e. the clipped scores
  normalised to sum to one per pixel.
* With a single label ``inference`` returns all ones.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

import numpy as np

from wsss_lib.data.voc import read_image

IGNORE = 255

# Labels are stored as ``key + 1`` in uint8 with 0 = background and 255 = IGNORE, so the largest
# usable class id is 253.
_MAX_KEY = IGNORE - 2

# Start method of the worker pool: "fork", because
# * "spawn" and "forkserver" re-run the caller's ``__main__`` file in each new process (that is how
#   multiprocessing finds the caller's definitions). This project's Snakemake ``script:`` files have
#   no ``if __name__ == "__main__"`` guard, so the stage would run again inside its own workers,
#   which die with "start a new process before ... bootstrapping phase" while the pool keeps
#   replacing them: the job hangs (checked with an unguarded script, Python 3.11).
# * The workers use only PIL, numpy (no BLAS) and pydensecrf (links no OpenMP), so none of the
#   state that makes forking a torch/h5py process risky (OpenMP thread pools, the HDF5 library, a
#   CUDA context) is touched in the child. Pool workers are forked before the pool starts its own
#   threads, and leave through ``os._exit``, so they never run the parent's atexit hooks (which
#   would close its HDF5 files).
# * It is also slightly faster: benchmarks/crf_processes.py, 20 VOC-sized images on 2 cores,
#   3.20 images/s forked vs 3.06 spawned (each spawned worker imports numpy, PIL and pydensecrf).
# Pass start_method="spawn" to confident_labels_many from a guarded script if fork is unwanted.
POOL_START_METHOD = "fork"


@dataclass(frozen=True)
class CRFParams:
    """Dense-CRF settings; the defaults are PSA's ``crf_inference`` (scale factor 1)."""

    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0

    @classmethod
    def from_config(cls, opts: Mapping[str, Any]) -> "CRFParams":
        """Parameters from a config mapping whose keys are exactly the field names.

        Both a misspelt and a forgotten key raise, so a config can never silently fall back to a
        default it meant to override.
        """
        names = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(opts) - set(names), key=str)
        if unknown:
            raise ValueError(f"unknown CRF option(s) {unknown}; expected exactly {names}")
        missing = [name for name in names if name not in opts]
        if missing:
            raise ValueError(f"missing CRF option(s) {missing}; expected exactly {names}")
        iterations = opts["iterations"]
        # bool is an int subclass; "iterations: true" is a config mistake, not 1 iteration.
        if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
            raise ValueError(f"CRF option 'iterations' must be a non-negative integer, got {iterations!r}")
        reals = {}
        for name in names[1:]:
            value = opts[name]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"CRF option {name!r} must be a number, got {value!r}")
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"CRF option {name!r} must be finite and non-negative, got {value!r}")
            reals[name] = float(value)
        return cls(iterations=int(iterations), **reals)


class CRFTask(NamedTuple):
    """One image for :func:`confident_labels_many`: its id, its file, and the CAMs of its classes."""

    image_id: str
    image_path: str
    cams: np.ndarray  # (k, H, W) in [0, 1]; float16 is accepted
    keys: np.ndarray  # (k,) 0-based class ids of the maps in ``cams``


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")


def dense_crf(image: np.ndarray, scores: np.ndarray, params: CRFParams) -> np.ndarray:
    """Marginals Q (C, H, W) float32 of a dense CRF (Krähenbühl & Koltun 2011) over ``scores``.

    ``image`` is (H, W, 3) uint8 RGB; ``scores`` (C, H, W) are non-negative class scores that need
    not sum to one (PSA feeds background score and CAMs unnormalised); pydensecrf clips them to
    [1e-5, 1] and uses ``-log`` as the unary.
    """
    # Imported here so that importing this module (e.g. for IGNORE or CRFParams) needs no pydensecrf.
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    image = np.asarray(image)
    scores = np.asarray(scores)
    if (image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or scores.ndim != 3
            or scores.shape[0] < 1 or scores.shape[1:] != image.shape[:2]):
        raise ValueError(f"dense_crf needs a uint8 (H, W, 3) image and (C >= 1, H, W) scores, "
                         f"got image {image.dtype} {image.shape} and scores {scores.shape}")
    scores = scores.astype(np.float32, copy=False)
    if not np.isfinite(scores).all() or (scores < 0).any():
        raise ValueError("scores must be finite and non-negative")

    n_classes, height, width = scores.shape
    crf = dcrf.DenseCRF2D(width, height, n_classes)
    # setUnaryEnergy needs a C-contiguous float32 (C, H*W) array; unary_from_softmax returns one.
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(scores)))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    # A copy, because addPairwiseBilateral rejects views ("ndarray is not C-contiguous") and
    # read-only buffers ("buffer source array is read-only"), e.g. np.asarray of a PIL image.
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                             rgbim=np.array(image, order="C", copy=True), compat=params.bilateral_compat)
    marginals = crf.inference(params.iterations)
    return np.asarray(marginals, dtype=np.float32).reshape(n_classes, height, width)


def _check_cams(cams: np.ndarray) -> np.ndarray:
    """``cams`` as float32 (k, H, W), checked to lie in [0, 1]."""
    cams = np.asarray(cams)
    if cams.ndim != 3:
        raise ValueError(f"cams must be (k, H, W), got shape {cams.shape}")
    cams = cams.astype(np.float32, copy=False)
    # Outside [0, 1], 1 - max goes negative and a fractional power of it is NaN.
    if cams.size and (not np.isfinite(cams).all() or cams.min() < 0 or cams.max() > 1):
        raise ValueError("cams must be finite and within [0, 1]")
    return cams


def scores_with_background(cams: np.ndarray, alpha: float) -> np.ndarray:
    """PSA's CRF input: ``(1 - max_c cams)^alpha`` as channel 0, then the ``k`` CAMs.

    ``cams`` (k, H, W) in [0, 1] -> float32 (k+1, H, W). With k == 0 the result is one all-ones
    background channel (nothing in the image but background).
    """
    cams = _check_cams(cams)
    if cams.shape[0] == 0:
        return np.ones((1, *cams.shape[1:]), dtype=np.float32)
    background = np.power(1.0 - cams.max(axis=0, keepdims=True), np.float32(alpha))
    return np.concatenate([background, cams], axis=0)


def _check_keys(keys: np.ndarray, n_maps: int) -> np.ndarray:
    keys = np.asarray(keys)
    if keys.ndim != 1 or len(keys) != n_maps:
        raise ValueError(f"keys must be 1-D with one class id per CAM ({n_maps}), got shape {keys.shape}")
    if len(keys) and (not np.issubdtype(keys.dtype, np.integer) or keys.min() < 0 or keys.max() > _MAX_KEY):
        raise ValueError(f"keys must be integer class ids in [0, {_MAX_KEY}], got {keys.tolist()}")
    return keys.astype(np.int64)


def confident_labels(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, low_alpha: float,
                     high_alpha: float, params: CRFParams) -> np.ndarray:
    """PSA's confident pseudo-labels (Ahn & Kwak 2018, Sec. 3.2) as uint8 (H, W).

    ``keys`` are the 0-based class ids of the ``k`` maps in ``cams``. A pixel is ``key + 1`` where
    the low-alpha CRF (large background score) still picks that class, 0 where the high-alpha CRF
    (small background score) still picks background, and ``IGNORE`` elsewhere. Background wins
    where both hold, as in PSA, whose label map writes the background after the objects.
    """
    image = np.asarray(image)
    _check_image(image)
    cams = _check_cams(cams)
    keys = _check_keys(keys, cams.shape[0])
    if cams.shape[1:] != image.shape[:2]:
        raise ValueError(f"cams {cams.shape} do not match image {image.shape}")
    if len(keys) == 0:
        # A single-label CRF returns all ones, so the answer is known without running it.
        return np.zeros(image.shape[:2], dtype=np.uint8)

    low = dense_crf(image, scores_with_background(cams, low_alpha), params).argmax(axis=0)
    high = dense_crf(image, scores_with_background(cams, high_alpha), params).argmax(axis=0)
    # Lookup from the low-alpha CRF's channel to the label: background channel -> IGNORE, c -> key+1.
    lookup = np.concatenate([[IGNORE], keys + 1]).astype(np.uint8)
    labels = lookup[low]
    labels[high == 0] = 0
    return labels


def _task_labels(task: CRFTask, low_alpha: float, high_alpha: float, params: CRFParams) -> tuple[str, np.ndarray]:
    """The worker: read the task's image and compute its confident labels."""
    image = read_image(task.image_path)
    cams = np.asarray(task.cams)
    if cams.ndim != 3 or cams.shape[1:] != image.shape[:2]:
        raise ValueError(f"image {task.image_id!r}: cams have shape {cams.shape}, "
                         f"image {task.image_path} is {image.shape}")
    labels = confident_labels(image, cams.astype(np.float32), np.asarray(task.keys), low_alpha, high_alpha, params)
    return task.image_id, labels


def _single_thread() -> None:
    """Pool initializer: keep each worker on one thread, so N workers use N cores, no more.

    The work itself is single-threaded already (pydensecrf links no OpenMP; the numpy calls are
    element-wise, no BLAS), so this only guards libraries a worker might load later. numpy's
    OpenBLAS is loaded before any initializer runs and keeps the idle helper thread it started
    (measured: 0 CPU ticks during a run); only an environment set before numpy's import avoids it.
    """
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"


def pool_imap(worker, items: Iterable, processes: int, start_method: str = POOL_START_METHOD) -> Iterator:
    """``worker(item)`` for each item, in order: in this process for ``processes <= 1``, else in
    ``processes`` single-threaded worker processes. Items are pulled lazily, at most two per worker
    ahead of the results, so only a few are in memory at a time. Leaving the iteration early
    cancels what has not started and waits for the running items (one per worker) to finish.

    Built on ``concurrent.futures.ProcessPoolExecutor`` with an explicit window rather than
    ``multiprocessing.Pool.imap``: ``Pool.terminate()``, which ``imap`` inside a ``with`` block runs
    when the caller stops early or a worker raises, can deadlock in ``_help_stuff_finish`` (CPython
    issues #78178, #73945, #96995, open). It did once, in CI, in the stop-early test: the run sat
    there until its 90-minute limit. Cancelling futures and a normal shutdown take no such lock.
    """
    if processes <= 1:
        for item in items:
            yield worker(item)
        return
    window = 2 * processes
    context = multiprocessing.get_context(start_method)
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context, initializer=_single_thread) as pool:
        pending: collections.deque[concurrent.futures.Future] = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(worker, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def confident_labels_many(tasks: Iterable[CRFTask], low_alpha: float, high_alpha: float, params: CRFParams,
                          processes: int, *, start_method: str = POOL_START_METHOD) -> Iterator[tuple[str, np.ndarray]]:
    """``(image_id, confident_labels(...))`` for each task, in the order of ``tasks``, computed in
    ``processes`` worker processes (see :func:`pool_imap`); identical to the serial run."""
    # partial of a module-level function pickles by reference, so workers can receive it.
    worker = functools.partial(_task_labels, low_alpha=low_alpha, high_alpha=high_alpha, params=params)
    return pool_imap(worker, tasks, processes, start_method)
