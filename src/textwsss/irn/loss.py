"""IRN's affinity loss (step/train_irn.py, without the displacement terms).

bg_pos, fg_pos: mean of -log(a + 1e-5) over their pairs; neg: mean of -log(1 + 1e-5 - a);
total = (bg_pos / 2 + fg_pos / 2 + neg) / 2. Each mean divides by (count + 1e-5), as IRN, so a batch without
pairs of a kind contributes 0 for it instead of NaN.
"""
from __future__ import annotations

import torch
from torch import Tensor

EPS = 1e-5


def _mean(values: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / (mask.sum() + EPS)


def relation_loss(affinity: Tensor, bg_pos: Tensor, fg_pos: Tensor, neg: Tensor) -> dict[str, Tensor]:
    """affinity (B, n_pairs) in [0, 1] and the pair-label masks of the same shape -> {'total', 'bg_pos',
    'fg_pos', 'neg'}."""
    for name, mask in (("bg_pos", bg_pos), ("fg_pos", fg_pos), ("neg", neg)):
        if mask.shape != affinity.shape:
            raise ValueError(f"{name} labels: expected shape {tuple(affinity.shape)} (the affinities), "
                             f"got {tuple(mask.shape)}")
    affinity = affinity.float()  # log(1e-5 + a) underflows in half precision
    bg = _mean(-torch.log(affinity + EPS), bg_pos)
    fg = _mean(-torch.log(affinity + EPS), fg_pos)
    ng = _mean(-torch.log(1 + EPS - affinity), neg)
    return {"total": (bg / 2 + fg / 2 + ng) / 2, "bg_pos": bg, "fg_pos": fg, "neg": ng}
