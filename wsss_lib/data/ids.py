"""Image ids: the one pattern every id must match, and the one way to build a file path from an id.

An id becomes a file name (``JPEGImages/{id}.jpg``, pseudo-label ``{id}.png``) and an HDF5 group name in the
stores, so an id read from a split list or CSV is a path fragment that someone else wrote. Before this check a
list line ``../../../../../escape_probe`` read a JPEG from outside the VOC root and made the random walk write
a PNG outside ``results/`` (issue 26, item 1); ``sub/2007_000032`` made nested folders and store groups.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterable

# ASCII letters, digits, '_', '-', '.'; first character a letter, digit or '_'. Covers VOC (2007_000032), SBD
# (2008_000002), COCO (COCO_train2014_000000000009) and the like (img-01.v2); rules out '/', '\\', '..' as a
# segment, hidden files, names an option parser would take for a flag, and control characters.
ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# Linux allows 255 bytes a file name; an id also gets a suffix and atomic_path's ".{name}.XXXXXXXX.tmp"
MAX_ID_LENGTH = 128


def check_image_id(image_id: str, where: str) -> str:
    """``image_id`` itself if it is a valid image id, else a ValueError naming ``where`` (file and line), the id
    and what is wrong with it."""
    if isinstance(image_id, str) and len(image_id) <= MAX_ID_LENGTH and ID_PATTERN.fullmatch(image_id):
        return image_id
    raise ValueError(f"{where}: invalid image id {image_id!r}: {_why_invalid(image_id)}. An image id is the file "
                     f"name of its image without '.jpg': ASCII letters, digits, '_', '-' and '.', starting with a "
                     f"letter, digit or '_', at most {MAX_ID_LENGTH} characters; fix the line or rename the image")


def _why_invalid(image_id) -> str:
    if not isinstance(image_id, str):
        return f"not a string but {type(image_id).__name__}"
    if not image_id:
        return "it is empty"
    if "/" in image_id or "\\" in image_id or os.path.isabs(image_id):
        return "it holds a path separator; ids name files directly inside the dataset's folders"
    if any(ord(c) < 32 or ord(c) == 127 for c in image_id):
        return "it holds a control character"
    if image_id.startswith((".", "-")):
        return f"it starts with {image_id[0]!r}"
    if len(image_id) > MAX_ID_LENGTH:
        return f"it is {len(image_id)} characters long"
    bad = sorted({c for c in image_id if not re.fullmatch(r"[A-Za-z0-9_.-]", c)})
    return f"it holds {''.join(bad)!r}"


def id_path(root: str | os.PathLike, image_id: str, suffix: str, where: str) -> Path:
    """``root / f"{image_id}{suffix}"`` for a valid id (else an error naming ``where``), checked to lie directly
    inside ``root``.

    The check is on the path as written (normalised, symlinks not followed): a dataset whose files are links
    to another disk is the owner's choice, an id that climbs out of its folder is not.
    """
    check_image_id(image_id, where)
    root = Path(root)
    path = root / f"{image_id}{suffix}"
    if Path(os.path.normpath(path)).parent != Path(os.path.normpath(root)):
        raise ValueError(f"{where}: image id {image_id!r} with {suffix!r} gives {path}, not a file inside {root}")
    return path


def require_ids(ids: Iterable[str], has: Callable[[str], bool], what: str, split, source) -> None:
    """KeyError naming ``split``, ``source`` and the first ids of ``ids`` for which ``has(id)`` is false (that
    have no ``what`` in ``source``: a store's group, a pseudo-label PNG)."""
    missing = [i for i in ids if not has(i)]
    if missing:
        raise KeyError(f"{len(missing)} images of {split} have no {what} in {source}, e.g. {missing[:3]}")
