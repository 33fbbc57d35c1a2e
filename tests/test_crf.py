"""Dense CRF wrappers: same result as a direct pydensecrf call, input validation, and a denoising effect."""
import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
from PIL import Image

from textwsss.crf import CRFParams, crf_from_labels, crf_from_probs
from vocmini import image_path, mask_path, read_image, read_mask

IMAGE_ID = "2007_000039"  # a tv monitor on a desk


def _half_size(voc_mini):
    """The real image and its gt at half resolution (nearest for the mask), to keep the test fast."""
    image = Image.fromarray(read_image(image_path(voc_mini, IMAGE_ID)))
    mask = Image.fromarray(read_mask(mask_path(voc_mini, IMAGE_ID)))
    size = (image.width // 2, image.height // 2)
    return (np.asarray(image.resize(size, Image.BILINEAR)).copy(),
            np.asarray(mask.resize(size, Image.NEAREST)).copy())


def _direct(image, unary, n, sxy_g, compat_g, sxy_b, srgb, compat_b, iters):
    h, w = image.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(np.ascontiguousarray(unary.reshape(n, -1), dtype=np.float32))
    d.addPairwiseGaussian(sxy=sxy_g, compat=compat_g)
    d.addPairwiseBilateral(sxy=sxy_b, srgb=srgb, rgbim=np.ascontiguousarray(image), compat=compat_b)
    return np.array(d.inference(iters)).reshape(n, h, w)


def test_labels_match_direct_pydensecrf_call(voc_mini):
    image, mask = _half_size(voc_mini)
    labels = np.where(mask == 20, 1, 0)
    labels = np.roll(labels, (6, -5), axis=(0, 1))  # a misaligned map the CRF has to move
    n, gt_prob = 2, 0.7
    # unary by hand: -log(gt_prob) for the given label, -log((1 - gt_prob) / (n - 1)) for the others
    unary = np.where(np.arange(n)[:, None, None] == labels[None], -np.log(gt_prob), -np.log((1 - gt_prob) / (n - 1)))
    expected = _direct(image, unary, n, 3, 3, 50, 5, 10, 10).argmax(0)
    got = crf_from_labels(image, labels, n, CRFParams(), gt_prob=gt_prob)
    assert got.shape == labels.shape
    np.testing.assert_array_equal(got, expected)
    assert (got != labels).mean() > 0.005  # the CRF did change the map


def test_probs_match_direct_pydensecrf_call(voc_mini):
    image, mask = _half_size(voc_mini)
    fg = np.clip(np.roll((mask == 20).astype(np.float32), (4, 4), axis=(0, 1)) * 0.8 + 0.1, 0, 1)
    probs = np.stack([1 - fg, fg]).astype(np.float32)
    params = CRFParams(gaussian_sxy=1, gaussian_compat=3, bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4,
                       iterations=5)
    expected = _direct(image, -np.log(np.clip(probs, 1e-5, 1)), 2, 1, 3, 67, 3, 4, 5)
    got = crf_from_probs(image, probs, params)
    assert got.dtype == np.float32 and got.shape == probs.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-4)


def test_crf_removes_label_noise_along_colour_edges():
    rng = np.random.default_rng(0)
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, 30:] = (220, 200, 30)
    clean = np.zeros((40, 60), np.int64)
    clean[:, 30:] = 1
    noisy = clean.copy()
    flip = rng.random(clean.shape) < 0.15
    noisy[flip] = 1 - noisy[flip]
    np.testing.assert_array_equal(crf_from_labels(image, noisy, 2), clean)


def test_zero_iterations_keep_the_unary_argmax():
    image = np.full((2, 3, 3), 90, np.uint8)
    labels = np.array([[0, 1, 2], [2, 1, 0]])
    np.testing.assert_array_equal(crf_from_labels(image, labels, 3, CRFParams(iterations=0)), labels)


def test_single_label_is_all_zero():
    image = np.zeros((4, 5, 3), np.uint8)
    np.testing.assert_array_equal(crf_from_labels(image, np.zeros((4, 5), int), 1), np.zeros((4, 5)))


@pytest.mark.parametrize("image, labels, n, gt_prob, match", [
    (np.zeros((4, 5, 3), np.float32), np.zeros((4, 5), int), 2, 0.7, "uint8"),  # e.g. a mean-subtracted image
    (np.zeros((4, 5), np.uint8), np.zeros((4, 5), int), 2, 0.7, "uint8"),
    (np.zeros((4, 6, 3), np.uint8), np.zeros((4, 5), int), 2, 0.7, "differs"),
    (np.zeros((4, 5, 3), np.uint8), np.full((4, 5), 2), 2, 0.7, r"0\.\.1"),
    (np.zeros((4, 5, 3), np.uint8), np.zeros((4, 5), int), 2, 1.0, "gt_prob"),
])
def test_labels_reject_bad_input(image, labels, n, gt_prob, match):
    with pytest.raises(ValueError, match=match):
        crf_from_labels(image, labels, n, CRFParams(), gt_prob=gt_prob)


def test_probs_reject_bad_input():
    image = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="differs"):
        crf_from_probs(image, np.full((2, 5, 4), 0.5, np.float32))
    with pytest.raises(ValueError, match=r"\(n, H, W\)"):
        crf_from_probs(image, np.full((4, 5), 0.5, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        crf_from_probs(image, np.full((2, 4, 5), np.nan, np.float32))
