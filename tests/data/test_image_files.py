"""Opening image files: EXIF orientation applied to photos and masks alike, oversized images refused by header."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import png_claiming
from wsss_lib.data.datasets import SegmentationTrainDataset
from wsss_lib.data.label_png import read_label_png, write_label_png
from wsss_lib.data.voc import VOC_CLASSES, build_split_table, image_size, read_image

ORIENTATION = 0x0112


def photo_with_orientation(path: Path, stored: np.ndarray, orientation: int) -> np.ndarray:
    """Save ``stored`` (H, W, 3) as a JPEG tagged with EXIF ``orientation``; return the pixels as decoded
    without it (plain PIL), i.e. as stored in the file."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(stored).save(path, format="JPEG", quality=95, subsampling=0, exif=exif)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def stored_photo(height: int, width: int) -> np.ndarray:
    """Dark, with one bright 8x8 block (aligned with JPEG's blocks, so its edges stay sharp) at the top left."""
    pixels = np.full((height, width, 3), 30, np.uint8)
    pixels[:8, :8] = 230
    return pixels


def voc_with_one_photo(root: Path, stored: np.ndarray, orientation: int, mask: np.ndarray) -> Path:
    voc = root / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    photo_with_orientation(voc / "JPEGImages/2007_000001.jpg", stored, orientation)
    write_label_png(voc / "SegmentationClass/2007_000001.png", mask)
    (voc / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n")
    return voc


@pytest.mark.parametrize("height, width", [(16, 16), (16, 24)], ids=["square", "non-square"])
def test_orientation_6_photo_pairs_with_a_mask_drawn_on_the_displayed_photo(tmp_path, height, width):
    stored = stored_photo(height, width)
    # Orientation 6: the viewer turns the stored pixels 90 degrees clockwise (np.rot90 with k=-1), so the bright
    # block, top left as stored, shows top right; the annotator's mask follows the display.
    displayed_mask = np.rot90((stored[..., 0] > 128).astype(np.uint8), k=-1)
    assert displayed_mask.shape == (width, height) and displayed_mask[:8, -8:].all()
    voc = voc_with_one_photo(tmp_path, stored, 6, displayed_mask)
    image_path = voc / "JPEGImages/2007_000001.jpg"
    raw = photo_with_orientation(image_path, stored, 6)

    assert image_size(image_path) == (width, height)
    upright = read_image(image_path)
    np.testing.assert_array_equal(upright, np.rot90(raw, k=-1))
    table = build_split_table(voc, "train", VOC_CLASSES)
    assert table.loc[0, "aeroplane"] == 1 and table[list(VOC_CLASSES)].to_numpy().sum() == 1

    dataset = SegmentationTrainDataset(table["id"], table["image"],
                                       lambda image_id: read_label_png(table.loc[0, "mask"]),
                                       lambda image, labels, generator: (np.asarray(image), labels))
    image, labels = dataset[0]
    np.testing.assert_array_equal(labels, displayed_mask)
    # pixel (r, c) of the image is the mask's (r, c): bright exactly where the mask has the object
    np.testing.assert_array_equal(image[..., 0] > 128, labels == 1)


def test_mask_in_the_stored_orientation_fails_on_size_naming_the_exif_orientation(tmp_path):
    stored = stored_photo(16, 24)
    voc = voc_with_one_photo(tmp_path, stored, 6, (stored[..., 0] > 128).astype(np.uint8))
    with pytest.raises(ValueError, match=r"2007_000001\.png is 16x24 \(HxW\) but its image .*2007_000001\.jpg is "
                                         r"24x16 as displayed \(its EXIF Orientation is 6; stored 16x24\)"):
        build_split_table(voc, "train", VOC_CLASSES)


@pytest.mark.parametrize("orientation, turn", [
    (1, lambda a: a), (2, lambda a: a[:, ::-1]), (3, lambda a: np.rot90(a, 2)), (4, lambda a: a[::-1]),
    (5, lambda a: np.rot90(a, 1)[::-1]), (6, lambda a: np.rot90(a, -1)), (7, lambda a: np.rot90(a, -1)[::-1]),
    (8, lambda a: np.rot90(a, 1)), (9, lambda a: a),  # 9 is no orientation: as stored, like exif_transpose
])
def test_every_orientation_gives_the_displayed_pixels_and_size(tmp_path, orientation, turn):
    # the EXIF 2.32 table (tag 0x0112): 2 mirror, 3 half turn, 4 flip, 5 transpose, 6 quarter turn clockwise,
    # 7 transverse, 8 quarter turn anticlockwise
    path = tmp_path / "photo.jpg"
    raw = photo_with_orientation(path, stored_photo(16, 24), orientation)
    expected = turn(raw)
    np.testing.assert_array_equal(read_image(path), expected)
    assert image_size(path) == expected.shape[:2]


def test_label_png_with_an_exif_orientation_is_turned_like_its_photo(tmp_path):
    labels = np.arange(6, dtype=np.uint8).reshape(2, 3)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(labels, mode="L").save(tmp_path / "m.png", exif=exif)
    np.testing.assert_array_equal(read_label_png(tmp_path / "m.png"), np.rot90(labels, k=-1))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("kind, reader", [("image", read_image), ("image", image_size), ("label PNG", read_label_png)])
@pytest.mark.parametrize("width, height", [(12, 10), (20, 20)], ids=["warned by PIL", "refused by PIL"])
def test_an_image_over_the_pixel_limit_is_refused_naming_file_size_and_limit(tmp_path, monkeypatch, kind, reader,
                                                                            width, height):
    # Pillow warns between MAX_IMAGE_PIXELS and twice that and raises DecompressionBombError above; both refused
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "claims.jpg"
    png_claiming(path, width, height)
    with pytest.raises(ValueError) as raised:
        reader(path)
    message = str(raised.value)
    assert message.startswith(f"{kind} {path} claims {width}x{height} (WxH) = {width * height} pixels, over the "
                              f"decompression-bomb limit of 100 pixels (PIL.Image.MAX_IMAGE_PIXELS)"), message
    assert "replace it with a smaller copy" in message, message


def test_a_real_20000_pixel_square_png_named_jpg_is_refused_unread(tmp_path):
    path = tmp_path / "bomb.jpg"
    png_claiming(path, 20000, 20000)
    assert path.stat().st_size < 200_000
    with pytest.raises(ValueError, match=f"image {path} claims 20000x20000 \\(WxH\\) = 400,000,000 pixels, over the "
                                         f"decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} pixels"):
        image_size(path)
