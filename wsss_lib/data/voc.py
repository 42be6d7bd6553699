"""One reader for every dataset in PASCAL VOC layout (real VOC 2012 + SBD, the VOC sample, synthetic).

Layout: ``JPEGImages/{id}.jpg``, ``SegmentationClassAug/`` or ``SegmentationClass/{id}.png`` (class
indices, 255 = ignore), optional ``Annotations/{id}.xml``, ``ImageSets/Segmentation/{split}.txt``.
A split table (``results/splits/{split}.csv``) has one row per image: ``id``, ``image``, ``mask``
(empty when absent) and one 0/1 column per foreground class.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from wsss_lib.classes import VOC_CLASSES  # noqa: F401 (re-exported: the VOC reader's class order)
from wsss_lib.data.ids import check_image_id, id_path
from wsss_lib.data.image_files import UNREADABLE, displayed_size, open_image, orientation, upright
from wsss_lib.data.label_png import IGNORE_INDEX, read_label_png

MASK_DIRS = ("SegmentationClassAug", "SegmentationClass")
BASE_COLUMNS = ("id", "image", "mask")


def find_voc_root(root: str | os.PathLike) -> Path:
    """The folder holding JPEGImages/: ``root`` itself, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``."""
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no VOC-layout tree at {root}: expected JPEGImages/ in it, in VOC2012/ or in VOCdevkit/VOC2012/"
    )


def read_split_ids(voc_root: Path, split: str) -> list[str]:
    path = Path(voc_root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"split list for {split!r} not found: {path}")
    ids = [check_image_id(line.strip(), f"split list {path}, line {number}")
           for number, line in enumerate(path.read_text().splitlines(), start=1) if line.strip()]
    if not ids:
        raise ValueError(f"split list {path} is empty")
    # a repeated id would weigh its image twice in training and in every mIoU, and collides in the stores
    duplicated = repeated_values(ids)
    if duplicated:
        raise ValueError(f"split list {path} lists {len(duplicated)} image id(s) more than once: {duplicated[:10]}")
    return ids


def repeated_values(values: Sequence[str]) -> list[str]:
    """The values that occur more than once, each once, in first-seen order."""
    seen, repeated = set(), {}
    for value in values:
        if value in seen:
            repeated[value] = None
        seen.add(value)
    return list(repeated)


# JPEG's end-of-image marker; a complete file ends with it. It cannot occur inside entropy-coded data (0xFF is
# byte-stuffed there), so a truncated file lacks it near its end. The window tolerates a little trailing padding.
JPEG_END = b"\xff\xd9"
JPEG_END_WINDOW = 1024


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image as displayed (after its EXIF orientation, as :func:`read_image` returns it)
    from its header, without decoding it; an unreadable, truncated or oversized file is an error naming it.

    Split tables are built from this, so a bad image fails the first, seconds-long job rather than a training
    job partway through an epoch; a full decode (~2 ms a VOC image) would triple that job's time.
    """
    path = Path(path)
    with open_image(path) as image:
        try:
            height, width = displayed_size(image)
        except UNREADABLE as err:  # a malformed EXIF block
            raise ValueError(f"cannot read image {path}: {err}") from err
        is_jpeg = image.format == "JPEG"
    if is_jpeg:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - JPEG_END_WINDOW))
            ends_cleanly = JPEG_END in handle.read()
        if not ends_cleanly:
            # truncated, or complete with trailing bytes (some cameras append data): only a full decode tells
            read_image(path)
    return height, width


def labels_from_mask(mask: np.ndarray, n_classes: int, source: str = "mask") -> np.ndarray:
    """0/1 vector over the foreground classes present in a label map (values 1..n_classes)."""
    values = np.unique(mask)
    bad = values[(values > n_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        raise ValueError(f"{source} has class values {bad.tolist()} outside 0..{n_classes} (and 255)")
    labels = np.zeros(n_classes, dtype=np.uint8)
    fg = values[(values >= 1) & (values <= n_classes)]
    labels[fg.astype(np.int64) - 1] = 1
    return labels


def labels_from_xml(path: Path, class_names: Sequence[str]) -> np.ndarray:
    """0/1 vector from a VOC annotation XML (every <object><name>, difficult ones included as in PSA)."""
    try:
        tree = ElementTree.parse(path)
    except ElementTree.ParseError as err:
        raise ValueError(f"cannot parse annotation {path}: {err}") from err
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.zeros(len(class_names), dtype=np.uint8)
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in index:
            raise ValueError(f"annotation {path} names unknown class {name!r}")
        labels[index[name]] = 1
    return labels


def build_split_table(voc_root: str | os.PathLike, split: str, class_names: Sequence[str]) -> pd.DataFrame:
    """The split table for ``split``: image-level labels from the masks, or from XML where a mask is absent.

    Every listed image must exist; an image with neither mask nor annotation is an error naming it.
    """
    voc_root = Path(voc_root)
    mask_dirs = [voc_root / name for name in MASK_DIRS if (voc_root / name).is_dir()]
    rows = []
    for image_id in read_split_ids(voc_root, split):
        where = f"image {image_id} of split {split!r}"
        image = id_path(voc_root / "JPEGImages", image_id, ".jpg", where)
        if not image.is_file():
            raise FileNotFoundError(f"image {image_id} listed in split {split!r} is missing: {image}")
        masks = [id_path(d, image_id, ".png", where) for d in mask_dirs]
        mask = next((m for m in masks if m.is_file()), None)
        xml = id_path(voc_root / "Annotations", image_id, ".xml", where)
        size = image_size(image)
        if mask is not None:
            mask_array = read_label_png(mask)
            if mask_array.shape != size:
                raise ValueError(f"mask {mask} is {mask_array.shape[0]}x{mask_array.shape[1]} (HxW) but its image "
                                 f"{image} is {size[0]}x{size[1]}{_orientation_note(image)}")
            labels = labels_from_mask(mask_array, len(class_names), source=str(mask))
        elif xml.is_file():
            labels = labels_from_xml(xml, class_names)
        else:
            raise FileNotFoundError(
                f"image {image_id} (split {split!r}) has no mask in {[str(d) for d in mask_dirs]} and no {xml}"
            )
        row = {"id": image_id, "image": str(image), "mask": "" if mask is None else str(mask)}
        row.update(zip(class_names, labels.tolist()))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*BASE_COLUMNS, *class_names])


def _orientation_note(image_path: Path) -> str:
    """For a size mismatch: the image's EXIF orientation, when it has one, since the sizes compared are as
    displayed."""
    with open_image(image_path) as image:
        value = orientation(image)
        stored = f"{image.height}x{image.width}"
    if value == 1:
        return ""
    return (f" as displayed (its EXIF Orientation is {value}; stored {stored}): a mask must follow the image as "
            f"a viewer shows it, turned by its EXIF orientation")


def read_split_table(path: str | os.PathLike, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a split CSV, checking its columns; ``class_names`` None means 'the columns after the base ones'."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split table not found: {path}")
    table = pd.read_csv(path, dtype={"id": str, "image": str, "mask": str}, keep_default_na=False)
    missing = [c for c in BASE_COLUMNS if c not in table.columns]
    if class_names is not None:
        missing += [c for c in class_names if c not in table.columns]
    if missing:
        raise ValueError(f"split table {path} lacks columns {missing}; it has {list(table.columns)}")
    for number, image_id in enumerate(table["id"], start=2):  # line 1 is the header
        check_image_id(image_id, f"split table {path}, line {number}")
    duplicated = repeated_values(table["id"].tolist())
    if duplicated:
        raise ValueError(f"split table {path} lists {len(duplicated)} image id(s) more than once: {duplicated[:10]}")
    names = list(class_names) if class_names is not None else [c for c in table.columns if c not in BASE_COLUMNS]
    labels = table[names]
    if not labels.isin([0, 1]).all().all():
        raise ValueError(f"split table {path}: class columns must hold 0/1 values")
    return table


def read_split_tables(paths: str | os.PathLike | Sequence[str | os.PathLike],
                      class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """One or several split CSVs as one table, each image once, in first-seen order.

    Stages that cover two splits (the CAM evaluation split and the pseudo-label split, where train is a
    subset of train_aug) read them through this; the splits must share their class columns.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("no split table given")
    tables = [read_split_table(path, class_names) for path in paths]
    require_same_classes(paths, tables)
    return pd.concat(tables, ignore_index=True).drop_duplicates("id", keep="first").reset_index(drop=True)


def class_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in BASE_COLUMNS]


def require_same_classes(paths: Sequence[str | os.PathLike], tables: Sequence[pd.DataFrame]) -> None:
    """Split tables read together must have the same class columns in the same order: a label vector's
    position is the class a network's output stands for. The error names each file and what it lacks."""
    first = class_columns(tables[0])
    for path, table in zip(paths[1:], tables[1:]):
        classes = class_columns(table)
        if classes == first:
            continue
        lacks = {str(p): [c for c in union if c not in class_columns(t)]
                 for p, t, union in ((paths[0], tables[0], classes), (path, table, first))}
        lacks = {p: missing for p, missing in lacks.items() if missing}
        detail = "; ".join(f"{p} lacks class columns {missing}" for p, missing in lacks.items()) or \
            f"{paths[0]} has them in the order {first}, {path} in the order {classes}"
        raise ValueError(f"split tables disagree on their classes: {detail}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB image as (H, W, 3) uint8, turned by its EXIF orientation as a viewer shows it
    (wsss_lib.data.image_files.upright); a missing, corrupt or oversized file is an error naming it.

    The one reader of photos: every dataset, the CRF and the figures decode through it.
    """
    with open_image(path) as image:
        try:
            return np.asarray(upright(image).convert("RGB"), dtype=np.uint8).copy()
        except UNREADABLE as err:
            raise ValueError(f"cannot read image {path}: {err}") from err
