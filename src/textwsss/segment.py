"""Inference of a trained segmentation model (DeepLab or CRIS), shared by eval_seg, TAS and `textwsss predict`
/ `textwsss evaluate`, so all give the same labels."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data.classes import ClassList
from .data.images import working_size
from .data.transforms import to_tensor


@torch.inference_mode()
def class_probabilities(model, image: np.ndarray, classes: ClassList, scales: Sequence[float] = (1.0,),
                        flip: bool = False, device: str | torch.device = "cpu") -> np.ndarray:
    """(num_labels, H, W) per-pixel label probabilities (background first), averaged over scales and flips.

    DeepLab: softmax of its logits. CRIS: each class prompt's sigmoid map, with the background
    probability the model's threshold, renormalised (so argmax equals CRIS's own thresholded rule).
    """
    x = to_tensor(image)[None].to(device)
    h, w = image.shape[:2]
    total = torch.zeros((classes.num_labels, h, w), device=device)
    n = 0
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        for flipped in ([False, True] if flip else [False]):
            inp = xs.flip(-1) if flipped else xs
            probs = _probs(model, inp, classes)
            probs = probs.flip(-1) if flipped else probs
            total += F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)[0]
            n += 1
    return (total / n).cpu().numpy()


def _probs(model, x: torch.Tensor, classes: ClassList) -> torch.Tensor:
    if model.spec["type"] == "cris":
        sig = model.class_maps(x, list(classes.prompts))  # (1, K, h, w) sigmoid maps
        bg = torch.full_like(sig[:, :1], model.bg_threshold)
        stacked = torch.cat([bg, sig], 1)
        return stacked / stacked.sum(1, keepdim=True)
    logits = model(x)
    if logits.shape[1] != classes.num_labels:
        raise ValueError(f"the model predicts {logits.shape[1]} labels, the class list has {classes.num_labels} "
                         f"(background and {classes.num_classes} classes)")
    return torch.softmax(logits, 1)


def _source_coords(out_len: int, in_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F.interpolate's bilinear sampling (align_corners=False) along one axis: lower index, upper index, weight."""
    pos = np.maximum((np.arange(out_len, dtype=np.float64) + 0.5) * (in_len / out_len) - 0.5, 0.0)
    lo = np.minimum(np.floor(pos).astype(np.int64), in_len - 1)
    hi = np.minimum(lo + 1, in_len - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def upsample_argmax(probs: np.ndarray, size: tuple[int, int], rows_per_band: int = 512) -> np.ndarray:
    """argmax over labels of `probs` (L, h, w) bilinearly resized to `size` (as F.interpolate with
    align_corners=False), without ever resizing the probabilities themselves.

    A bilinear sample is a convex combination of its four source pixels, so where the four agree on their
    argmax the sample has the same argmax; only pixels between disagreeing sources (the label boundaries) are
    interpolated. Memory is a band of rows of integers, whatever the output size.
    """
    h, w = size
    labels = probs.argmax(0)
    y0, y1, wy = _source_coords(h, probs.shape[1])
    x0, x1, wx = _source_coords(w, probs.shape[2])
    out = np.empty((h, w), dtype=np.uint8)
    for top in range(0, h, rows_per_band):
        rows = slice(top, min(h, top + rows_per_band))
        a, b = labels[y0[rows]][:, x0], labels[y0[rows]][:, x1]
        c, d = labels[y1[rows]][:, x0], labels[y1[rows]][:, x1]
        band = a.astype(np.uint8)
        r, k = np.nonzero((a != b) | (a != c) | (a != d))
        if len(r):
            ry0, ry1, rwy = y0[rows][r], y1[rows][r], wy[rows][r]
            kx0, kx1, kwx = x0[k], x1[k], wx[k]
            top_row = probs[:, ry0, kx0] * (1 - kwx) + probs[:, ry0, kx1] * kwx
            bottom_row = probs[:, ry1, kx0] * (1 - kwx) + probs[:, ry1, kx1] * kwx
            band[r, k] = (top_row * (1 - rwy) + bottom_row * rwy).argmax(0)
        out[rows] = band
    return out


def predict_probs(model, image: np.ndarray, classes: ClassList, *, scales: Sequence[float] = (1.0,),
                  flip: bool = False, max_side: int = 0,
                  device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(the image at its working size, (num_labels, h, w) label probabilities at that size): the image is
    downscaled so its long side is at most `max_side` (0: as it is), so memory stays bounded."""
    h, w = image.shape[:2]
    small = working_size(h, w, max_side)
    work = image if small == (h, w) else _resize(image, small)
    return work, class_probabilities(model, work, classes, scales, flip, device)


def labels_from_probs(work: np.ndarray, probs: np.ndarray, size: tuple[int, int], *, crf=None,
                      keep: Sequence[int] | None = None) -> np.ndarray:
    """uint8 label map at `size` from predict_probs' output.

    keep: the class indices (0-based, background excluded) that may be painted, e.g. a class gate's; the other
    classes' probabilities are zeroed before the CRF and the argmax. crf: a CRFParams to refine the probabilities.
    """
    if keep is not None:
        allowed = np.zeros(probs.shape[0], dtype=bool)
        allowed[0] = True
        allowed[np.asarray(list(keep), dtype=np.int64) + 1] = True
        probs = np.where(allowed[:, None, None], probs, 0.0).astype(np.float32)
        probs /= np.maximum(probs.sum(0, keepdims=True), 1e-12)
    if crf is not None:
        from .crf import crf_from_probs

        probs = crf_from_probs(work, probs, crf)
    if tuple(size) == probs.shape[1:]:
        return probs.argmax(0).astype(np.uint8)
    return upsample_argmax(probs, size)


def predict_labels(model, image: np.ndarray, classes: ClassList, *, scales: Sequence[float] = (1.0,),
                   flip: bool = False, crf=None, max_side: int = 0, keep: Sequence[int] | None = None,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 (H, W) label map of `image` (H, W, 3) uint8.

    crf: a CRFParams to refine the probabilities, or None. max_side: the model sees the image downscaled so its
    long side is at most this (0: as it is); the labels come back at the image's own size, so memory stays
    bounded whatever the image size. keep: only these class indices may be painted (labels_from_probs).
    """
    work, probs = predict_probs(model, image, classes, scales=scales, flip=flip, max_side=max_side, device=device)
    return labels_from_probs(work, probs, image.shape[:2], crf=crf, keep=keep)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
