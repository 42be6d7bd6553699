"""Opening image files with Pillow: failures named, oversized images refused, EXIF orientation applied.

Used by the RGB image reader (wsss_lib.data.voc.read_image, image_size) and the label PNG reader
(wsss_lib.data.label_png.read_label_png), so photos and their masks are opened the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import ExifTags, Image, ImageOps

ORIENTATION = ExifTags.Base.Orientation
# EXIF Orientation values whose display turns the stored pixels a quarter turn (EXIF 2.32, tag 0x0112): the
# displayed height is the stored width. The rest (1-4) keep the size; PIL.ImageOps.exif_transpose ignores others.
QUARTER_TURNS = frozenset({5, 6, 7, 8})
# What PIL raises for a file it cannot parse or decode (it does not always name the file)
UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def open_image(path: str | os.PathLike, kind: str = "image") -> Image.Image:
    """``Image.open(path)`` (lazy: header only), its failures as errors naming ``path``; ``kind`` names the file
    in them ("image", "label PNG").

    An image over ``PIL.Image.MAX_IMAGE_PIXELS`` is refused, by header, before anything is decoded. Pillow
    itself raises only above twice that limit (DecompressionBombError, which is no OSError) and merely warns
    between the two.
    """
    path = Path(path)
    try:
        image = Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{kind} not found: {path}") from None
    except Image.DecompressionBombError as err:
        raise ValueError(_too_large(path, kind, _claimed_size(path))) from err
    except UNREADABLE as err:
        raise ValueError(f"cannot read {kind} {path}: {err}") from err
    if Image.MAX_IMAGE_PIXELS is not None and image.width * image.height > Image.MAX_IMAGE_PIXELS:
        image.close()
        raise ValueError(_too_large(path, kind, image.size))
    return image


def _too_large(path: Path, kind: str, size: tuple[int, int] | None) -> str:
    claimed = f"{size[0]}x{size[1]} (WxH) = {size[0] * size[1]:,} pixels" if size else \
        f"more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels"
    return (f"{kind} {path} claims {claimed}, over the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} "
            f"pixels (PIL.Image.MAX_IMAGE_PIXELS); it is refused unread. If it is a real image, replace it with a "
            f"smaller copy; otherwise remove it (and its id from the split lists)")


def _claimed_size(path: Path) -> tuple[int, int] | None:
    """The (width, height) in a file's header, read by the first format plugin that accepts it as Image.open
    does, but without Image.open's bomb check, which refuses such a file before its size can be reported."""
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(16)  # what Image.open hands the plugins' accept()
            for name in Image.ID:
                factory, accept = Image.OPEN[name]
                if accept is not None and accept(prefix) is not True:
                    continue
                handle.seek(0)
                try:
                    return factory(handle, str(path)).size
                except UNREADABLE:
                    continue
    except OSError:
        pass
    return None


def orientation(image: Image.Image) -> int:
    """The EXIF Orientation of an opened image, 1 (as stored) when it has none; the same value
    PIL.ImageOps.exif_transpose acts on (EXIF, else XMP tiff:Orientation). JPEG keeps EXIF in its header, so
    this decodes no pixels there."""
    value = image.getexif().get(ORIENTATION, 1)
    return value if isinstance(value, int) else 1


def displayed_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) of an opened image as displayed, i.e. after its EXIF orientation."""
    width, height = image.size
    return (width, height) if orientation(image) in QUARTER_TURNS else (height, width)


def upright(image: Image.Image) -> Image.Image:
    """The decoded image turned the way it is displayed, in place (PIL.ImageOps.exif_transpose).

    A mask is drawn over the photo as a viewer shows it, so the pixels must be turned the same way to pair with
    it; OpenCV's ``imread`` turns them too by default (since OpenCV 3.1; IMREAD_IGNORE_ORIENTATION opts out).
    PSA (PIL ``Image.open``) and IRN (``imageio.imread``) read the stored pixels; VOC's photos carry no
    orientation tag, so on VOC both readings agree.
    """
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    return image
