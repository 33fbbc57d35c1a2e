"""IRN's pair labels from a seed map (the CRF pseudo-labels: 0 background, 1..K classes, 255 unconfident).

A pair of two confident pixels is a positive when both are background (bg_pos) or both the same object class
(fg_pos), a negative when their labels differ; a pair with an unconfident end has no label.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .pairs import PairIndex

IGNORE = 255


@dataclass(frozen=True)
class PairLabels:
    """Boolean masks over a PairIndex's pairs (tensors, so a DataLoader batches them)."""

    bg_pos: torch.Tensor
    fg_pos: torch.Tensor
    neg: torch.Tensor


def seeds_at_stride(seeds: np.ndarray, stride: int = 4) -> np.ndarray:
    """The seed map on the stride grid: nearest neighbour at (stride * i, stride * j), as IRN's
    cv2.resize(fx=1/stride, INTER_NEAREST); a label map must not be averaged."""
    seeds = np.asarray(seeds)
    if seeds.ndim != 2:
        raise ValueError(f"seed map: expected an (H, W) label map, got shape {seeds.shape}")
    return seeds[::stride, ::stride]


def pair_labels(seeds: np.ndarray, index: PairIndex, num_labels: int | None = None) -> PairLabels:
    """The labels of `index`'s pairs from a seed map on its grid. Labels other than 0..num_labels-1 and 255
    raise ValueError (num_labels None: any value below 255 is a class)."""
    seeds = np.asarray(seeds)
    if seeds.shape != (index.height, index.width):
        raise ValueError(f"seed map: expected shape {(index.height, index.width)} (the pair index's grid), "
                         f"got {seeds.shape}")
    flat = seeds.reshape(-1).astype(np.int64)
    bad = (flat != IGNORE) & ((flat < 0) | (flat >= (IGNORE if num_labels is None else num_labels)))
    if bad.any():
        raise ValueError(f"seed map: expected labels 0..{(num_labels or IGNORE) - 1} or {IGNORE} (ignored), "
                         f"found {sorted(set(flat[bad].tolist()))[:5]}")
    a, b = flat[index.src], flat[index.dst]
    valid = (a != IGNORE) & (b != IGNORE)
    same = valid & (a == b)
    return PairLabels(bg_pos=torch.from_numpy(same & (a == 0)), fg_pos=torch.from_numpy(same & (a > 0)),
                      neg=torch.from_numpy(valid & (a != b)))
