"""SBD (Hariharan et al., ICCV 2011, "Semantic contours from inverse detectors") to VOC layout.

The benchmark.tgz release unpacks to ``benchmark_RELEASE/dataset/`` holding ``train.txt``,
``val.txt`` and ``cls/{id}.mat``; that ``dataset`` directory is the ``sbd_root`` used here.
Together with VOC 2012 it gives the usual ``SegmentationClassAug`` labels and ``train_aug`` list.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from wsss_lib.atomic import atomic_dir
from wsss_lib.data.ids import check_image_id, id_path
from wsss_lib.data.label_png import IGNORE_INDEX, read_label_png, write_label_png

NUM_CLASSES = 21  # background + 20 VOC classes


def read_sbd_mat(path: str | os.PathLike) -> np.ndarray:
    """Read the class map of an SBD ``cls/{id}.mat`` (``GTcls.Segmentation``) as (H, W) uint8."""
    path = Path(path)
    # loadmat reports a missing file as a generic OSError, so check first.
    if not path.is_file():
        raise FileNotFoundError(f"SBD .mat file not found: {path}")
    try:
        # squeeze_me stays False so a 1-pixel-high map keeps its 2-D shape; struct_as_record=False
        # gives attribute access; the 1x1 wrappers MATLAB puts around structs are removed below.
        mat = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False, appendmat=False)
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError, NotImplementedError) as err:
        raise ValueError(f"cannot read SBD .mat file {path}: {err}") from err

    if "GTcls" not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"SBD .mat file {path} has no 'GTcls' struct (variables: {found})")
    gtcls = _unwrap(mat["GTcls"])
    segmentation = _field(gtcls, "Segmentation")
    if segmentation is None:
        raise ValueError(f"SBD .mat file {path}: 'GTcls' struct has no 'Segmentation' field")

    seg = np.asarray(_unwrap(segmentation))
    if seg.ndim != 2 or seg.dtype.kind not in "biuf":
        raise ValueError(
            f"SBD .mat file {path}: GTcls.Segmentation must be a 2-D numeric array, "
            f"got shape {seg.shape} dtype {seg.dtype}"
        )
    valid = (seg == IGNORE_INDEX) | ((seg >= 0) & (seg < NUM_CLASSES) & (seg == np.round(seg)))
    if not valid.all():
        bad = np.unique(seg[~valid])[:10].tolist()
        raise ValueError(
            f"SBD .mat file {path}: GTcls.Segmentation has values outside 0-{NUM_CLASSES - 1} "
            f"and {IGNORE_INDEX}: {bad}"
        )
    return seg.astype(np.uint8)


def _unwrap(value: Any) -> Any:
    """Strip the size-1 object/struct arrays MATLAB wraps around structs and cells."""
    while isinstance(value, np.ndarray) and value.size == 1 and (value.dtype == object or value.dtype.names):
        value = value.reshape(-1)[0]
    return value


def _field(struct: Any, name: str) -> Any:
    """A struct field by name, whatever form loadmat gave the struct (mat_struct or record); None if absent."""
    if isinstance(struct, scipy.io.matlab.mat_struct):
        return getattr(struct, name, None)
    names = getattr(getattr(struct, "dtype", None), "names", None)
    if names and name in names:
        return struct[name]
    return None


def build_segmentation_class_aug(
    voc_root: str | os.PathLike,
    sbd_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    ids: Iterable[str],
) -> None:
    """Write ``out_dir/{id}.png`` for every id: VOC 2012 ``SegmentationClass`` if present, else SBD.

    ``voc_root`` is ``VOCdevkit/VOC2012``; ``sbd_root`` is ``benchmark_RELEASE/dataset``. All ids
    are located before anything is written, and ``out_dir`` appears only once it is complete.
    """
    voc_dir = Path(voc_root) / "SegmentationClass"
    sbd_dir = Path(sbd_root) / "cls"
    sources: list[tuple[str, Path, bool]] = []  # (id, source file, is_voc_png)
    for image_id in dict.fromkeys(ids):  # de-duplicated, order kept
        where = f"label of image {image_id!r}"
        voc_png = id_path(voc_dir, image_id, ".png", where)
        sbd_mat = id_path(sbd_dir, image_id, ".mat", where)
        # VOC's own annotations win: SBD's are coarser and lack VOC's 255 object boundaries.
        if voc_png.is_file():
            sources.append((image_id, voc_png, True))
        elif sbd_mat.is_file():
            sources.append((image_id, sbd_mat, False))
        else:
            raise FileNotFoundError(f"no label for id {image_id!r}: neither {voc_png} nor {sbd_mat} exists")

    with atomic_dir(out_dir) as tmp:
        for image_id, source, is_voc_png in sources:
            labels = read_label_png(source) if is_voc_png else read_sbd_mat(source)
            write_label_png(id_path(tmp, image_id, ".png", f"label of image {image_id!r}"), labels)


def train_aug_ids(
    voc_train: Iterable[str],
    voc_val: Iterable[str],
    sbd_train: Iterable[str],
    sbd_val: Iterable[str],
) -> list[str]:
    """The augmented training list: (SBD train | SBD val | VOC train) - VOC val, sorted.

    On the real lists this gives the standard 10,582 ids; VOC val is removed so the
    evaluation images never leak into training.
    """
    return sorted((set(sbd_train) | set(sbd_val) | set(voc_train)) - set(voc_val))


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Read an image-id list (one id per line, blank lines skipped); an invalid id
    (wsss_lib.data.ids.check_image_id) is an error naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"id list not found: {path}") from None
    ids = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        image_id = line.strip()
        if not image_id:
            continue
        # Guards against passing a per-class list ("2008_000002  1") where an id list is expected.
        if len(image_id.split()) != 1:
            raise ValueError(f"{path}:{lineno}: expected one id per line, got {line!r}")
        ids.append(check_image_id(image_id, f"id list {path}, line {lineno}"))
    return ids
