"""Dense CRF (Krähenbühl & Koltun) refinement of label maps and probability maps with pydensecrf.

The CRF always runs on the ORIGINAL RGB image as C-contiguous uint8: its bilateral kernel compares raw
colours, so a normalised or mean-subtracted image (a known bug elsewhere) silently changes the result.
"""
from __future__ import annotations

import numpy as np

from .params import DEEPLAB_CRF, CRFParams  # noqa: F401  (the CRF settings live with the params)


def _check_image(image: np.ndarray, shape: tuple[int, int], what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
    if image.shape[:2] != tuple(shape):
        raise ValueError(f"image size {image.shape[:2]} differs from {what} size {tuple(shape)}")
    return np.ascontiguousarray(image)


def _infer(image: np.ndarray, unary: np.ndarray, n_labels: int, params: CRFParams) -> np.ndarray:
    """Mean-field inference; returns Q as float32 (n_labels, H, W)."""
    import pydensecrf.densecrf as dcrf  # imported lazily: a compiled extension only this module needs

    if params.iterations < 0:
        raise ValueError(f"CRF iterations must be >= 0, got {params.iterations}")
    h, w = image.shape[:2]
    crf = dcrf.DenseCRF2D(w, h, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    crf.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=image,
                             compat=params.bilateral_compat)
    q = crf.inference(int(params.iterations))
    return np.asarray(q, dtype=np.float32).reshape(n_labels, h, w)


def crf_from_labels(image: np.ndarray, labels: np.ndarray, n_labels: int, params: CRFParams = CRFParams(),
                    gt_prob: float = 0.7) -> np.ndarray:
    """Refines a hard label map (H, W) of values 0..n_labels-1; returns the refined argmax (H, W) int64.

    gt_prob: probability the unary gives to the given label (the rest is shared by the other labels); 0 is a
    label like any other (pydensecrf's `zero_unsure` off), as IRN uses it.
    """
    from pydensecrf.utils import unary_from_labels

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    image = _check_image(image, labels.shape, "labels")
    if not 0 < gt_prob < 1:
        raise ValueError(f"gt_prob must lie in (0, 1), got {gt_prob}")
    if n_labels < 1:
        raise ValueError(f"n_labels must be >= 1, got {n_labels}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_labels):
        raise ValueError(f"labels must lie in 0..{n_labels - 1}, got {labels.min()}..{labels.max()}")
    if n_labels == 1:  # nothing to choose between (and pydensecrf's unary divides by n_labels - 1)
        return np.zeros(labels.shape, dtype=np.int64)
    unary = unary_from_labels(labels.astype(np.int64), n_labels, gt_prob=gt_prob, zero_unsure=False)
    return _infer(image, unary, n_labels, params).argmax(0)


def crf_from_probs(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Refines class probabilities (n, H, W) (unary = -log p, p clipped at 1e-5); returns float32 (n, H, W)."""
    from pydensecrf.utils import unary_from_softmax

    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must be (n, H, W) with n >= 1, got shape {probs.shape}")
    image = _check_image(image, probs.shape[1:], "probs")
    if not np.isfinite(probs).all():
        raise ValueError("probs contain NaN or infinite values")
    return _infer(image, unary_from_softmax(probs), probs.shape[0], params)
