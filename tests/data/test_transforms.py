"""Joint image/label augmentation: the labels follow the image exactly; padding is ignored."""

import numpy as np
import pytest
import torch
from PIL import Image

from wsss_lib.data.label_png import IGNORE_INDEX
from wsss_lib.data.transforms import SegmentationTrainTransform, downsample_labels, letterbox

MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def coded_pair(height=30, width=40, seed=0):
    """An image whose red channel is 40 * label, so labels can be read back from transformed pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, size=(height, width)).astype(np.uint8)
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = labels * 40 + 20
    image[..., 1] = np.arange(width)[None, :] * 3
    return Image.fromarray(image), labels


@pytest.mark.parametrize("seed", range(6))
def test_flip_and_crop_move_labels_with_pixels(seed):
    image, labels = coded_pair()
    transform = SegmentationTrainTransform(crop=36, mean=MEAN, std=STD, hflip=True)
    pixels, out = transform(image, labels, torch.Generator().manual_seed(seed))
    assert pixels.shape == (3, 36, 36) and out.shape == (36, 36) and out.dtype == torch.int64
    red = pixels[0].numpy()
    inside = out.numpy() != IGNORE_INDEX
    # every labelled pixel carries its own label's colour; every padded pixel is empty
    np.testing.assert_array_equal((red[inside] - 20) / 40, out.numpy()[inside])
    assert np.all(red[~inside] == 0)
    assert inside.sum() == 30 * 36  # height 30 < crop: 6 padded rows; width 40 > crop: cropped


def test_random_scale_keeps_label_values_and_size():
    image, labels = coded_pair(40, 50)
    transform = SegmentationTrainTransform(crop=64, mean=MEAN, std=STD, scale_range=(0.5, 1.5))
    for seed in range(5):
        pixels, out = transform(image, labels, torch.Generator().manual_seed(seed))
        values = set(np.unique(out.numpy()).tolist())
        assert values <= set(range(5)) | {IGNORE_INDEX}  # nearest resize invents no label


def test_label_stride_matches_feature_map_size():
    image, labels = coded_pair(30, 40)
    transform = SegmentationTrainTransform(crop=36, mean=MEAN, std=STD, hflip=False, label_stride=8)
    _, out = transform(image, labels, torch.Generator().manual_seed(0))
    assert out.shape == (5, 5)  # ceil(36 / 8)


def test_downsample_labels_by_hand():
    labels = np.arange(36, dtype=np.uint8).reshape(6, 6)
    # stride 4: cells start at 0 and 4, centres at 2 and 6 -> clamped to 5
    np.testing.assert_array_equal(downsample_labels(labels, 4), labels[np.ix_([2, 5], [2, 5])])
    np.testing.assert_array_equal(downsample_labels(labels, 1), labels)


def test_transform_is_reproducible_per_generator():
    image, labels = coded_pair()
    transform = SegmentationTrainTransform(crop=32, mean=MEAN, std=STD, resize_long_range=(30, 50),
                                           color_jitter=(0.3, 0.3, 0.3, 0.1))
    a = transform(image, labels, torch.Generator().manual_seed(3))
    b = transform(image, labels, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_label_image_size_mismatch_rejected():
    image, labels = coded_pair()
    with pytest.raises(ValueError, match="label map"):
        SegmentationTrainTransform(crop=32, mean=MEAN, std=STD)(image, labels[:-1], torch.Generator())


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_the_mean():
    """A 20 x 40 image at size 16: resized to 8 x 16 (long side 16), rows 4..11 of the canvas, mean elsewhere."""
    image = np.zeros((20, 40, 3), dtype=np.uint8)
    image[:, :20] = (200, 100, 50)  # left half coloured, right half black
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 5.0)
    out = letterbox(image, 16, mean, std)
    assert out.shape == (3, 16, 16) and out.dtype == np.float32
    assert (out[:, :4] == 0).all() and (out[:, 12:] == 0).all()  # padding = the normalised mean colour
    expected_left = (np.array([200, 100, 50]) - mean) / std
    expected_right = (0 - np.array(mean)) / std
    np.testing.assert_allclose(out[:, 4:12, :7], np.broadcast_to(expected_left[:, None, None], (3, 8, 7)))
    np.testing.assert_allclose(out[:, 4:12, 9:], np.broadcast_to(expected_right[:, None, None], (3, 8, 7)))


def test_colour_jitter_is_torchvisions_with_its_randomness_from_our_generator(monkeypatch):
    """Same parameters, same pixels as torchvision's ColorJitter; the draws come from our generator alone
    (reproducible, torch's global RNG untouched) and lie in ColorJitter's ranges."""
    from torchvision.transforms import ColorJitter
    from wsss_lib.data.transforms import colour_jitter_params, jitter_colours

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    jitter = (0.3, 0.3, 0.3, 0.1)
    global_rng = torch.get_rng_state()
    for seed in range(5):
        ours = np.asarray(jitter_colours(image, jitter, torch.Generator().manual_seed(seed)))
        params = colour_jitter_params(jitter, torch.Generator().manual_seed(seed))
        order, brightness, contrast, saturation, hue = params
        assert sorted(order.tolist()) == [0, 1, 2, 3]
        assert all(0.7 <= f <= 1.3 for f in (brightness, contrast, saturation)) and -0.1 <= hue <= 0.1
        monkeypatch.setattr(ColorJitter, "get_params", staticmethod(lambda *args, p=params: p))
        np.testing.assert_array_equal(ours, np.asarray(ColorJitter(*jitter)(image)))
    assert torch.equal(torch.get_rng_state(), global_rng)
    again = np.asarray(jitter_colours(image, jitter, torch.Generator().manual_seed(4)))
    np.testing.assert_array_equal(again, ours)
    other = np.asarray(jitter_colours(image, jitter, torch.Generator().manual_seed(5)))
    assert not np.array_equal(other, ours)
    # a component that is off is neither drawn nor applied
    assert colour_jitter_params((0.3, 0.0, 0.0, 0.0), torch.Generator().manual_seed(0))[2:] == (None, None, None)
