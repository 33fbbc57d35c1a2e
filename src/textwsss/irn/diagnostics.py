"""Where a random walk gains or loses: the pieces it depends on, each scored against the ground-truth masks.

- mask_boundary: the boundary map a perfect relation network would give (an oracle for the walk).
- pair_agreement: how often the pair labels train_irn learns from (irn/pair_labels.py on the CRF seeds) agree
  with the pairs' true relation: the seeds' quality as the relation network sees it.
- BoundaryScore: how well a learned boundary map separates true boundary cells from the rest (ROC AUC, and
  the mean boundary value on each).
"""
from __future__ import annotations

import numpy as np

from .pair_labels import IGNORE, pair_labels
from .pairs import PairIndex


def mask_boundary(mask: np.ndarray, stride: int = 4) -> np.ndarray:
    """(ceil(H / stride), ceil(W / stride)) float32 map of a label mask (H, W): 1 on every cell whose pixels hold
    VOC's void outline (255) or a change of label (to the right or below), else 0."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask: expected an (H, W) label map, got shape {mask.shape}")
    edge = mask == IGNORE
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    h, w = mask.shape
    gh, gw = -(-h // stride), -(-w // stride)
    padded = np.zeros((gh * stride, gw * stride), dtype=bool)
    padded[:h, :w] = edge
    return padded.reshape(gh, stride, gw, stride).any(axis=(1, 3)).astype(np.float32)


def pair_agreement(seeds: np.ndarray, truth: np.ndarray, index: PairIndex) -> dict[str, int]:
    """Counts of the seed pair labels that the true labels confirm, both maps on `index`'s grid (255 ignored).

    pos / neg: seed pairs labelled positive (same label) / negative (different labels) whose two ends both have a
    true label; pos_true / neg_true: those the truth confirms; related: pairs whose two ends both have a true
    label (what a perfect seed map would label)."""
    seed = pair_labels(seeds, index)
    true = pair_labels(truth, index)
    pos = (seed.bg_pos | seed.fg_pos).numpy()
    neg = seed.neg.numpy()
    true_pos = (true.bg_pos | true.fg_pos).numpy()
    true_neg = true.neg.numpy()
    known = true_pos | true_neg
    return {"pos": int((pos & known).sum()), "pos_true": int((pos & true_pos).sum()),
            "neg": int((neg & known).sum()), "neg_true": int((neg & true_neg).sum()), "related": int(known.sum())}


class BoundaryScore:
    """Accumulates a boundary map's values on true boundary cells and on the others over many images: ROC AUC
    (the chance that a random boundary cell scores above a random other cell, ties counted half) from histograms
    of `bins` equal bins of [0, 1], and the mean value on each."""

    def __init__(self, bins: int = 1000):
        self.bins = int(bins)
        self.hist = np.zeros((2, self.bins), dtype=np.int64)  # row 0: other cells, row 1: boundary cells
        self.sums = np.zeros(2)

    def update(self, boundary: np.ndarray, truth: np.ndarray) -> None:
        boundary, truth = np.asarray(boundary, np.float64), np.asarray(truth) > 0.5
        if boundary.shape != truth.shape:
            raise ValueError(f"boundary map {boundary.shape} and true boundary {truth.shape} differ in size")
        cells = np.clip((boundary * self.bins).astype(np.int64), 0, self.bins - 1)
        for row, sel in enumerate((~truth, truth)):
            self.hist[row] += np.bincount(cells[sel], minlength=self.bins)
            self.sums[row] += boundary[sel].sum()

    def auc(self) -> float | None:
        neg, pos = self.hist
        if not neg.sum() or not pos.sum():
            return None
        below = np.concatenate([[0], np.cumsum(neg)[:-1]])  # other cells in lower bins
        wins = (pos * below).sum() + 0.5 * (pos * neg).sum()
        return float(wins / (pos.sum() * neg.sum()))

    def summary(self) -> dict:
        counts = self.hist.sum(1)
        means = [float(s / c) if c else None for s, c in zip(self.sums, counts)]
        return {"auc": self.auc(), "mean_on_boundary": means[1], "mean_elsewhere": means[0],
                "boundary_cells": int(counts[1]), "other_cells": int(counts[0])}
