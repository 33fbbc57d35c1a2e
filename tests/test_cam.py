import numpy as np
import pytest
import torch

from textwsss.data.classes import VOC
from textwsss.cam import (group_by_size, labels_from_cams, multiscale_cams, normalise_per_class, reference_cam,
                          sweep_thresholds)


class FirstChannel(torch.nn.Module):
    """A 'CAM network' whose map for every class is the image's red channel minus 0.2 (so ReLU matters)."""

    def forward(self, x):
        return (x[:, :1] - 0.2).expand(-1, 20, -1, -1)


def test_normalise_per_class_by_its_own_maximum():
    cams = torch.tensor([[[0.0, 2.0], [1.0, 4.0]], [[0.5, 0.25], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = normalise_per_class(cams)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    torch.testing.assert_close(out[1], torch.tensor([[1.0, 0.5], [0.0, 0.0]]))
    assert torch.all(out[2] == 0)  # an empty map stays empty, no division by zero


def test_flip_is_undone_before_summing():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 8, 12)
    image[..., :, :6] += 1.0  # strongly asymmetric left/right
    cams = multiscale_cams(FirstChannel(), image, [[3]], scales=[1.0], flip=True)[0]
    expected = normalise_per_class(torch.relu(image[0, :1] - 0.2))
    torch.testing.assert_close(cams, expected)
    # without undoing the flip the left half would not dominate
    assert cams[0, :, :6].mean() > cams[0, :, 6:].mean() + 0.2


def test_relu_before_sum_and_only_labelled_classes_kept():
    image = torch.zeros(1, 3, 4, 4)
    image[0, 0, 0, 0] = 1.0
    cams = multiscale_cams(FirstChannel(), image, [[0, 7]], scales=[1.0], flip=False)[0]
    assert cams.shape == (2, 4, 4)
    assert cams[0, 0, 0] == pytest.approx(1.0) and cams[0, 1, 1] == 0.0  # negatives clipped, not subtracted


def test_batched_equals_per_image_per_scale_loop():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 20, 3, stride=2, padding=1)).eval()
    images = torch.rand(3, 3, 37, 50)
    keys = [[1], [0, 5], [19, 2, 3]]
    scales = [1.0, 0.5, 1.5, 2.0]
    batched = multiscale_cams(net, images, keys, scales, flip=True)
    capped = multiscale_cams(net, images, keys, scales, flip=True, max_pixels=2000)  # 1 or 2 images per pass
    for i in range(3):
        ref = reference_cam(net, images[i], keys[i], scales, flip=True)
        torch.testing.assert_close(batched[i], ref, atol=1e-4, rtol=0)
        torch.testing.assert_close(capped[i], ref, atol=1e-4, rtol=0)


def test_group_by_size_is_deterministic_and_homogeneous():
    sizes = {"b": (3, 4), "a": (3, 4), "c": (5, 5), "d": (3, 4)}
    batches = group_by_size(sizes, batch_size=2)
    assert batches == [["a", "b"], ["d"], ["c"]]


def test_labels_from_cams_threshold_and_label_values():
    cams = np.array([[[0.9, 0.1], [0.4, 0.0]], [[0.2, 0.3], [0.6, 0.0]]], dtype=np.float32)
    labels = labels_from_cams(cams, [4, 14], threshold=0.25)
    np.testing.assert_array_equal(labels, [[5, 15], [15, 0]])
    assert labels_from_cams(np.zeros((0, 2, 2)), [], 0.1).tolist() == [[0, 0], [0, 0]]


def test_sweep_picks_the_best_threshold():
    # object pixels have CAM 0.45..0.5, background pixels 0.2..0.3: only thresholds in (0.3, 0.45) are perfect
    gt = np.zeros((10, 10), np.uint8)
    gt[:5] = 3
    cams = np.where(gt == 3, 0.45, 0.2)[None].astype(np.float32)
    cams[0, 5:, :5] = 0.3
    cams[0, :5, :5] = 0.5
    best, curve = sweep_thresholds([(cams, [2], gt)], [0.1, 0.2, 0.35, 0.5, 0.6], VOC.label_names)
    assert best["threshold"] == 0.35 and best["miou"] == pytest.approx(100.0)
    by_t = {c["threshold"]: c["miou"] for c in curve}
    assert by_t[0.1] < 100 and by_t[0.6] < 100 and len(curve) == 5
    assert best["per_class"]["bird"] == pytest.approx(100.0) and best["n_images"] == 1


def test_sweep_without_masks_scores_nothing():
    best, curve = sweep_thresholds([], [0.1, 0.2], VOC.label_names)
    assert best["miou"] is None and best["n_images"] == 0 and curve == []
