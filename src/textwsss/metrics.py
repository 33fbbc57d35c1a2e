"""Segmentation metrics: one confusion matrix per split, mIoU in percent, and referring-segmentation IoUs.

The confusion matrix is accumulated over the whole split (not averaged per image), as VOC scores it.
A class absent from both the prediction and the ground truth of the whole split has an undefined IoU;
it is excluded from the mean and listed under "absent" so a reader knows the mean covers fewer classes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .data.classes import IGNORE


class ConfusionMatrix:
    """Rows: ground truth, columns: prediction, one per label name (background first, as a ClassList's
    label_names). Pixels whose ground truth is 255 are ignored."""

    def __init__(self, names: Sequence[str]):
        if len(names) < 1:
            raise ValueError("ConfusionMatrix: expected at least one label name")
        self.num_classes = len(names)
        self.names = list(names)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred = np.asarray(pred)
        gt = np.asarray(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
        valid = gt != IGNORE
        p = pred[valid].astype(np.int64)
        g = gt[valid].astype(np.int64)
        if p.size and (p.min() < 0 or p.max() >= self.num_classes):
            raise ValueError(f"prediction values must lie in 0..{self.num_classes - 1} on scored pixels, "
                             f"got {p.min()}..{p.max()}")
        if g.size and g.max() >= self.num_classes:
            raise ValueError(f"ground-truth values must lie in 0..{self.num_classes - 1} or be {IGNORE}, got {g.max()}")
        self.matrix += np.bincount(g * self.num_classes + p, minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        """Per-class IoU in [0, 1]; NaN for classes absent from both prediction and ground truth."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def summary(self) -> dict:
        iou = self.iou()
        present = ~np.isnan(iou)
        total = self.matrix.sum()
        return {
            "miou": float(100 * iou[present].mean()) if present.any() else 0.0,
            "pixel_acc": float(100 * np.trace(self.matrix) / total) if total else 0.0,
            "per_class": {n: (round(float(100 * v), 4) if not np.isnan(v) else None)
                          for n, v in zip(self.names, iou)},
            "absent": [n for n, p in zip(self.names, present) if not p],
        }


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Intersection and union pixel counts of two binary masks."""
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    return int(np.logical_and(pred, gt).sum()), int(np.logical_or(pred, gt).sum())


def referring_scores(pairs: Sequence[tuple[int, int]]) -> dict:
    """mIoU (mean of per-sample IoU) and oIoU (sum of intersections / sum of unions), both in percent.

    `pairs` holds (intersection, union) per sample; a sample whose union is empty counts as IoU 1
    (nothing to find, nothing predicted).
    """
    if not pairs:
        return {"miou": 0.0, "oiou": 0.0, "n": 0}
    inter = np.array([p[0] for p in pairs], dtype=np.float64)
    union = np.array([p[1] for p in pairs], dtype=np.float64)
    per_sample = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    return {
        "miou": float(100 * per_sample.mean()),
        "oiou": float(100 * inter.sum() / union.sum()) if union.sum() else 100.0,
        "n": len(pairs),
    }
