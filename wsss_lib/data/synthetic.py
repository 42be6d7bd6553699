"""Deterministic synthetic segmentation dataset in PASCAL VOC layout, made for WSSS on a CPU.

Why this design
---------------
Weakly supervised semantic segmentation (WSSS) trains a classifier on *image-level* labels,
takes its class activation maps (CAMs) as seeds and refines them (dense CRF on colour,
affinity random walk) into masks. The characteristic failure of CAMs is that they fire on the
*most discriminative part* of an object and under-cover the rest. A toy dataset where the whole
object is equally discriminative (e.g. a red disc = class 1) would hide that failure, and the
refinement stages would have nothing to recover. So every object here has two parts:

* a large **body** -- a random blob (rotated superellipse with a wobbly outline, 27-55 % of the
  image side along its major axis) filled with a fairly uniform, lightly textured colour drawn
  from a palette **shared by all classes** (random hue, saturation 0.40-0.65, value 0.45-0.85),
  with only a weak class tint (``BODY_TINT`` = 15 % of the class colour mixed in). The body is
  therefore a weak cue of the class: a classifier cannot rely on it, so its CAM under-covers it.
* a small **discriminative mark** inside the body -- a class-specific shape (disc, cross,
  triangle, ...; fixed orientation) in a saturated class-specific colour (full saturation,
  hues 18 deg apart, ordered so the first classes are as far apart as possible), covering
  6-11 % of the body's area at a random position inside it. This is what a classifier learns,
  so the CAM lights up (roughly) the mark.

The ground truth of an object is body U mark (the mark lies inside the body), labelled with its
class. The **background** is desaturated (saturation <= 0.15) and textured -- smooth
low-frequency noise from upsampled random grids, a random stripe pattern and a linear gradient --
so it differs in colour on average from the saturated bodies and a colour-based CRF can grow a
CAM seed over the uniform body up to its boundary. Mild Gaussian pixel noise (sigma 4) is added
to everything.

Each image holds ``min_objects..max_objects`` objects of random classes (repeats allowed) at
random positions and scales. Later objects occlude earlier ones, but a placement that would hide
more than half of an earlier object, or more than half of its mark, is re-drawn (after a few
failed tries the object is dropped), so image labels stay learnable. The image-level labels are
the classes present in the final mask, and every image has a visible object covering at least
2 % of its pixels.

Determinism: each image has its own generator, seeded by ``SeedSequence([seed, stream, index])``
(stream 0 for the train_aug pool, 1 for val), so an image does not depend on how many others were
generated, and train and val draw from different streams. JPEG (quality 95, 4:4:4 chroma so the
small saturated marks are not smeared) and palette PNG encodings are deterministic, so the same
arguments give byte-identical files.
"""

from __future__ import annotations

import colorsys
import functools
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from wsss_lib.atomic import atomic_dir
from wsss_lib.classes import SYNTHETIC_CLASSES, synthetic_class_names
from wsss_lib.data.ids import id_path
from wsss_lib.data.label_png import write_label_png

MAX_CLASSES = len(SYNTHETIC_CLASSES)
MAX_OBJECTS = 8
MIN_IMAGE_SIZE = 32
JPEG_QUALITY = 95

#: Fraction of the class colour mixed into an object's body colour (the body's weak class cue).
BODY_TINT = 0.15
#: Range of the mark's target area as a fraction of its body's (in-image) area.
MARK_AREA_FRACTION = (0.06, 0.11)
#: Range of the body's major-axis length as a fraction of the image side (before outline wobble).
BODY_EXTENT = (0.27, 0.55)
#: Standard deviation of the Gaussian pixel noise added to the whole image (0..255 scale).
PIXEL_NOISE_SIGMA = 4.0
#: Every image has a visible object covering at least this fraction of its pixels.
MIN_VISIBLE_FRACTION = 0.02
#: A new object may hide at most this fraction of an earlier object (and of its mark).
MAX_OCCLUDED_FRACTION = 0.5

_SPLIT_STREAM = {"train_aug": 0, "val": 1}


# --------------------------------------------------------------------------------------------
# Class-specific marks: shapes on normalised coordinates (u, v) in [-1, 1]^2 (v points down).
# --------------------------------------------------------------------------------------------

def _disc(u, v):
    return u * u + v * v <= 1.0


def _cross(u, v):
    return (np.abs(u) <= 0.34) | (np.abs(v) <= 0.34)


def _triangle(u, v):
    return (v <= 0.75) & (np.abs(u) <= 0.55 * (v + 1.0))


def _square(u, v):
    return (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.5 ** 2)


def _star(u, v):
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    return r <= 0.45 + 0.55 * (0.5 + 0.5 * np.cos(5.0 * theta + np.pi / 2))


def _diamond(u, v):
    return np.abs(u) + np.abs(v) <= 1.0


def _hbar(u, v):
    return np.abs(v) <= 0.36


def _vbar(u, v):
    return np.abs(u) <= 0.36


def _saltire(u, v):
    a = (u + v) / np.sqrt(2.0)
    b = (u - v) / np.sqrt(2.0)
    return ((np.abs(a) <= 0.28) | (np.abs(b) <= 0.28)) & (u * u + v * v <= 1.1)


def _crescent(u, v):
    return (u * u + v * v <= 1.0) & (np.hypot(u - 0.5, v) > 0.75)


def _frame(u, v):
    m = np.maximum(np.abs(u), np.abs(v))
    return (m <= 0.95) & (m >= 0.5)


def _hourglass(u, v):
    return (np.abs(u) <= np.abs(v)) & (np.abs(v) <= 0.95)


def _tee(u, v):
    return (v <= -0.4) | (np.abs(u) <= 0.3)


def _ell(u, v):
    return (u <= -0.35) | (v >= 0.35)


def _chevron(u, v):
    return (v >= np.abs(u) - 0.75) & (v <= np.abs(u) - 0.05)


def _halfdisc(u, v):
    return (u * u + v * v <= 1.0) & (v >= -0.1)


def _twodots(u, v):
    return (np.hypot(u - 0.5, v) <= 0.48) | (np.hypot(u + 0.5, v) <= 0.48)


def _stripes(u, v):
    return np.cos(2.5 * np.pi * v) >= 0.0


def _bowtie(u, v):
    return (np.abs(v) <= np.abs(u)) & (np.abs(u) <= 0.95)


_MARK_SHAPES: tuple[tuple[str, Callable[[np.ndarray, np.ndarray], np.ndarray]], ...] = tuple(zip(SYNTHETIC_CLASSES, (
    _disc, _cross, _triangle, _square, _ring, _star, _diamond, _hbar, _vbar, _saltire,
    _crescent, _frame, _hourglass, _tee, _ell, _chevron, _halfdisc, _twodots, _stripes, _bowtie,
), strict=True))


def _mark_shape(class_index: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Mask of class ``class_index`` (0-based)'s mark on normalised coordinates, clipped to the box."""
    inside = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    return _MARK_SHAPES[class_index][1](u, v) & inside


@functools.lru_cache(maxsize=None)
def _mark_fill_fraction(class_index: int) -> float:
    """Fraction of the mark's [-1, 1]^2 box that its shape fills (to size marks by area)."""
    t = (np.arange(201) + 0.5) / 201 * 2.0 - 1.0
    v, u = np.meshgrid(t, t, indexing="ij")
    return float(_mark_shape(class_index, u, v).mean())


def _class_hues() -> list[float]:
    """20 hues 18 deg apart, ordered by greedy farthest-point so early classes are far apart."""
    slots = list(range(MAX_CLASSES))
    order = [0]
    while len(order) < MAX_CLASSES:
        def gap(s: int) -> int:
            return min(min(abs(s - o), MAX_CLASSES - abs(s - o)) for o in order)

        best = max((s for s in slots if s not in order), key=lambda s: (gap(s), -s))
        order.append(best)
    return [s / MAX_CLASSES for s in order]


#: Saturated mark colour of each class (0-based rows), float RGB in 0..255.
MARK_COLOURS = np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in _class_hues()], dtype=np.float64) * 255.0


class_names = synthetic_class_names  # foreground class names (the mark's shape): ["disc", "cross", ...]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a (cells+1)^2 random grid bilinearly upsampled to size^2."""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1, channels))
    t = (np.arange(size) + 0.5) / size * cells
    i0 = np.minimum(t.astype(np.int64), cells - 1)
    f = (t - i0)[:, None]
    rows = grid[i0] * (1.0 - f[:, :, None]) + grid[i0 + 1] * f[:, :, None]  # (size, cells+1, ch)
    cols = rows[:, i0] * (1.0 - f.T[:, :, None]) + rows[:, i0 + 1] * f.T[:, :, None]
    return cols


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float64) * 255.0


def _background(rng: np.random.Generator, size: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Desaturated textured background: base colour + smooth noise + stripes + gradient."""
    base = _hsv(rng.uniform(), rng.uniform(0.0, 0.15), rng.uniform(0.35, 0.8))
    lum = 28.0 * _smooth_noise(rng, size, int(rng.integers(3, 7)))
    chroma = 6.0 * _smooth_noise(rng, size, int(rng.integers(2, 5)), channels=3)
    angle = rng.uniform(0.0, np.pi)
    period = rng.uniform(0.08, 0.25) * size
    along = xx * np.cos(angle) + yy * np.sin(angle)
    stripes = rng.uniform(6.0, 14.0) * np.sin(2.0 * np.pi * along / period + rng.uniform(0.0, 2.0 * np.pi))
    g_angle = rng.uniform(0.0, 2.0 * np.pi)
    gradient = rng.uniform(0.0, 20.0) * ((xx * np.cos(g_angle) + yy * np.sin(g_angle)) / size)
    return base + lum + chroma + (stripes + gradient)[:, :, None]


def _body_mask(rng: np.random.Generator, size: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """A random blob: rotated superellipse with a low-order harmonic wobble of its outline."""
    extent = rng.uniform(*BODY_EXTENT) * size
    a = extent / 2.0
    b = a * rng.uniform(0.55, 1.0)
    margin = 0.3 * extent
    cx, cy = rng.uniform(margin, size - margin, size=2)
    rot = rng.uniform(0.0, np.pi)
    p = rng.uniform(1.8, 4.0)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(rot) + dy * np.sin(rot)) / a
    v = (-dx * np.sin(rot) + dy * np.cos(rot)) / b
    r = (np.abs(u) ** p + np.abs(v) ** p) ** (1.0 / p)
    theta = np.arctan2(v, u)
    amp2, amp3 = rng.uniform(0.0, 0.1, size=2)
    ph2, ph3 = rng.uniform(0.0, 2.0 * np.pi, size=2)
    outline = 1.0 + amp2 * np.cos(2.0 * theta + ph2) + amp3 * np.cos(3.0 * theta + ph3)
    return r <= outline


def _window_all(mask: np.ndarray, half: int) -> np.ndarray:
    """True where the (2*half+1)^2 window centred on a pixel lies entirely in ``mask`` (and the image)."""
    k = 2 * half + 1
    integral = np.pad(mask.astype(np.int32), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = integral[k:, k:] - integral[:-k, k:] - integral[k:, :-k] + integral[:-k, :-k]
    out = np.zeros_like(mask)
    if sums.size:
        out[half:half + sums.shape[0], half:half + sums.shape[1]] = sums == k * k
    return out


def _mark_mask(rng: np.random.Generator, class_index: int, body: np.ndarray,
               xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """The class's mark, sized to a random fraction of the body's area, at a random spot inside it."""
    target = rng.uniform(*MARK_AREA_FRACTION) * body.sum()
    scale = max(np.sqrt(target / (4.0 * _mark_fill_fraction(class_index))), 1.0)
    half = int(np.ceil(scale))
    while True:
        valid = _window_all(body, half)
        if valid.any() or half == 0:
            break
        half -= 1
        scale = max(min(scale, half), 1.0)
    candidates = np.flatnonzero(valid if valid.any() else body)
    centre = int(candidates[rng.integers(len(candidates))])
    cy, cx = divmod(centre, body.shape[1])
    # Centre on the pixel centre, so the mark is symmetric and fits the window tested above.
    u = (xx - (cx + 0.5)) / scale
    v = (yy - (cy + 0.5)) / scale
    return _mark_shape(class_index, u, v) & body


def _layout(rng: np.random.Generator, size: int, n_classes: int, min_objects: int, max_objects: int,
            xx: np.ndarray, yy: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Objects as (class_index, body, mark), back to front, with bounded occlusion.

    A new object is re-drawn (up to 25 tries, then dropped) if it would leave less than
    ``1 - MAX_OCCLUDED_FRACTION`` of an earlier object's body or mark visible.
    """
    n_objects = int(rng.integers(min_objects, max_objects + 1))
    placed: list[tuple[int, np.ndarray, np.ndarray]] = []
    visible: list[tuple[np.ndarray, np.ndarray]] = []  # visible (body, mark) of each placed object
    for _ in range(n_objects):
        cls = int(rng.integers(n_classes))
        for _try in range(25):
            body = _body_mask(rng, size, xx, yy)
            if body.sum() < 4:
                continue
            after = [(vb & ~body, vm & ~body) for vb, vm in visible]
            keep = 1.0 - MAX_OCCLUDED_FRACTION
            if all(vb.sum() >= keep * b.sum() and vm.sum() >= keep * m.sum()
                   for (vb, vm), (_, b, m) in zip(after, placed)):
                mark = _mark_mask(rng, cls, body, xx, yy)
                placed.append((cls, body, mark))
                visible = after + [(body, mark)]
                break
    return placed


def render_image(rng: np.random.Generator, image_size: int, n_classes: int, *,
                 min_objects: int = 1, max_objects: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one synthetic image (internal; public for tests and diagnostics).

    Returns ``(image, labels, mark_mask)``: the (S, S, 3) uint8 RGB image, the (S, S) uint8 label
    map (0 background, 1..n_classes objects; ground truth = body U mark) and the (S, S) bool mask of
    the *visible* discriminative-mark pixels. Everything is drawn from ``rng`` alone.
    """
    size = image_size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    for _attempt in range(100):
        canvas = _background(rng, size, xx, yy)
        labels = np.zeros((size, size), dtype=np.uint8)
        marks = np.zeros((size, size), dtype=bool)
        owner = np.full((size, size), -1, dtype=np.int64)
        for k, (cls, body, mark) in enumerate(_layout(rng, size, n_classes, min_objects, max_objects, xx, yy)):
            class_rgb = MARK_COLOURS[cls]
            value = rng.uniform(0.45, 0.85)
            body_rgb = (1.0 - BODY_TINT) * _hsv(rng.uniform(), rng.uniform(0.40, 0.65), value) \
                + BODY_TINT * class_rgb * value
            texture = 10.0 * _smooth_noise(rng, size, int(rng.integers(3, 6)))[:, :, 0] \
                + rng.normal(0.0, 3.0, size=(size, size))
            mark_rgb = class_rgb * rng.uniform(0.9, 1.0)
            canvas[body] = body_rgb + texture[body][:, None]
            canvas[mark] = mark_rgb
            labels[body] = cls + 1
            owner[body] = k
            marks[body] = mark[body]
        visible = np.bincount(owner[owner >= 0], minlength=1)
        if visible.size and visible.max() >= MIN_VISIBLE_FRACTION * size * size:
            break
    else:  # pragma: no cover - practically unreachable with the size ranges above
        raise RuntimeError("could not render an image with a visible object")
    canvas += rng.normal(0.0, PIXEL_NOISE_SIGMA, size=canvas.shape)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return image, labels, marks


# --------------------------------------------------------------------------------------------
# Dataset on disk
# --------------------------------------------------------------------------------------------

def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def split_ids(n_train: int, n_train_aug: int, n_val: int) -> dict[str, list[str]]:
    """Image ids of each split: train = first n_train of train_aug; val numbered after them."""
    train_aug = [f"syn_{i:06d}" for i in range(n_train_aug)]
    val = [f"syn_{n_train_aug + j:06d}" for j in range(n_val)]
    return {"train": train_aug[:n_train], "train_aug": train_aug, "val": val}


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split`` ("train_aug" or "val"), independent of the others."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM[split], index]))


def generate_synthetic(root: Path, *, n_train: int, n_train_aug: int, n_val: int, image_size: int,
                       n_classes: int, seed: int, min_objects: int = 1, max_objects: int = 3) -> None:
    """Write the synthetic dataset to ``root`` in VOC layout, atomically (a failure leaves no root).

    Layout: ``JPEGImages/{id}.jpg`` (RGB, quality 95), ``SegmentationClass/{id}.png`` (palette PNG,
    0 background, 1..n_classes) and ``ImageSets/Segmentation/{train,train_aug,val}.txt``. As in
    VOC, train is a subset of train_aug and val is disjoint from both. Same arguments give
    byte-identical files. An existing ``root`` is replaced only once the new tree is complete.
    """
    _check_int("n_classes", n_classes, 1, MAX_CLASSES)
    _check_int("image_size", image_size, MIN_IMAGE_SIZE)
    _check_int("n_train", n_train, 1)
    _check_int("n_train_aug", n_train_aug, 1)
    if n_train_aug < n_train:
        raise ValueError(f"n_train_aug must be >= n_train ({n_train}), got {n_train_aug}")
    _check_int("n_val", n_val, 1)
    _check_int("seed", seed, 0)
    _check_int("min_objects", min_objects, 1, MAX_OBJECTS)
    _check_int("max_objects", max_objects, 1, MAX_OBJECTS)
    if max_objects < min_objects:
        raise ValueError(f"max_objects must be >= min_objects ({min_objects}), got {max_objects}")

    ids = split_ids(n_train, n_train_aug, n_val)
    jobs = [(image_id, "train_aug", i) for i, image_id in enumerate(ids["train_aug"])]
    jobs += [(image_id, "val", j) for j, image_id in enumerate(ids["val"])]
    with atomic_dir(root) as tmp:
        jpeg_dir = tmp / "JPEGImages"
        seg_dir = tmp / "SegmentationClass"
        sets_dir = tmp / "ImageSets" / "Segmentation"
        for d in (jpeg_dir, seg_dir, sets_dir):
            d.mkdir(parents=True)
        for image_id, split, index in jobs:
            image, labels, _ = render_image(image_rng(seed, split, index), image_size, n_classes,
                                            min_objects=min_objects, max_objects=max_objects)
            Image.fromarray(image).save(id_path(jpeg_dir, image_id, ".jpg", "synthetic ids"), format="JPEG",
                                        quality=JPEG_QUALITY, subsampling=0)
            write_label_png(id_path(seg_dir, image_id, ".png", "synthetic ids"), labels)
        for split, split_list in ids.items():
            (sets_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in split_list))
