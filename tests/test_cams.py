import numpy as np
import torch

from wsss_lib.cams import multiscale_cams, normalise_by_max
from wsss_lib.evaluation import cams_to_labels, strongest_class
from wsss_lib.models.cam_net import build_cam_net


def test_symmetric_input_gives_symmetric_cam():
    torch.manual_seed(0)
    model = build_cam_net("small_cnn", 3, "none", 8).eval()
    image = torch.randn(1, 3, 48, 40)
    image = image + image.flip(-1)  # mirror-symmetric input
    with torch.no_grad():
        strided, high_res = multiscale_cams(model, image, scales=[1.0, 0.5, 1.5], flip=True)
    torch.testing.assert_close(high_res, high_res.flip(-1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(strided, strided.flip(-1), rtol=1e-4, atol=1e-5)
    assert strided.shape == (1, 3, 12, 10) and high_res.shape == (1, 3, 48, 40)


def test_batched_views_equal_one_forward_per_view():
    torch.manual_seed(1)
    model = build_cam_net("small_cnn", 2, "none", 8).eval()
    images = torch.randn(3, 3, 32, 32)
    scales = [1.0, 0.5, 2.0]
    with torch.no_grad():
        _, batched = multiscale_cams(model, images, scales, flip=True)
        for i in range(3):
            expected = 0
            for scale in scales:
                for flip in (False, True):
                    view = images[i : i + 1].flip(-1) if flip else images[i : i + 1]
                    if scale != 1:
                        view = torch.nn.functional.interpolate(view, scale_factor=scale, mode="bilinear")
                    cam = model.cams(view)
                    cam = cam.flip(-1) if flip else cam
                    expected = expected + torch.nn.functional.interpolate(cam, size=(32, 32), mode="bilinear")
            torch.testing.assert_close(batched[i : i + 1], expected, rtol=1e-4, atol=1e-4)


def test_normalise_by_max_and_labels():
    cams = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]], [[3.0, 0.0], [0.0, 0.0]]]])
    norm = normalise_by_max(cams, eps=0.0)
    assert torch.allclose(norm.flatten(-2).amax(-1), torch.ones(1, 2))
    labels = cams_to_labels(norm[0].numpy(), np.array([4, 7]), threshold=0.4)
    # pixel (0,0): class 7 (1.0); (0,1): class 4 (0.5); (1,0): 0.25 < 0.4 -> bg; (1,1): class 4 (1.0)
    np.testing.assert_array_equal(labels, [[8, 5], [0, 5]])
    label, peak = strongest_class(np.zeros((0, 2, 2), np.float32), np.array([], int))
    assert label.shape == (2, 2) and not label.any()
