"""Losses of the segmentation stage: cross-entropy for DeepLab, the text-to-pixel contrastive loss for CRIS,
and the conversion of a semantic (pseudo-)label map into CRIS (class, binary mask) samples.
Label 255 is ignored everywhere: such pixels give no loss and no gradient."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = 255


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = IGNORE, weight: Tensor | None = None) -> Tensor:
    """Mean cross-entropy over non-ignored pixels. logits (B,C,H,W); target (B,H,W) long in 0..C-1 or 255.
    Logits at another resolution than the target are bilinearly resized to it. All-ignored batch -> 0.
    weight: optional (C,) class weights (the mean is then weighted, as torch's)."""
    if logits.dim() != 4 or target.dim() != 3:
        raise ValueError(f"cross_entropy: expected logits (B,C,H,W) and target (B,H,W), got "
                         f"{tuple(logits.shape)} and {tuple(target.shape)}")
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    target = target.long()
    if not (target != ignore_index).any():
        return logits.sum() * 0.0  # keeps the graph; nan-free
    return F.cross_entropy(logits, target, weight=None if weight is None else weight.to(logits),
                           ignore_index=ignore_index)


def balanced_class_weights(counts: np.ndarray, power: float = 0.5) -> Tensor:
    """Class weights from the pixel count of every label in the training labels: (count / mean count)^-power,
    normalised to mean 1 over the classes present; classes with no pixel get weight 0 (they never occur)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = (counts[present] / counts[present].mean()) ** -power
    w[present] /= w[present].mean()
    return torch.tensor(w, dtype=torch.float32)


def label_counts(label_files, num_labels: int) -> np.ndarray:
    """Pixels of every label value 0..num_labels-1 over label PNGs (255 ignored)."""
    from ..data.images import read_mask

    counts = np.zeros(num_labels, dtype=np.int64)
    for f in label_files:
        values = read_mask(f).ravel()
        counts += np.bincount(values[values != IGNORE], minlength=num_labels)[:num_labels]
    return counts


def text_to_pixel_loss(mask_logits: Tensor, target: Tensor, ignore_index: int = IGNORE) -> Tensor:
    """CRIS text-to-pixel contrastive loss: binary cross-entropy of sigmoid(mask_logits) against the binary
    mask, averaged over the non-ignored pixels of the batch.

    mask_logits (B,1,h,w) (or (B,h,w)); target (B,H,W) in {0, 1, 255}, nearest-resized to (h, w) so no
    label is invented between classes. Pixels at 255 are excluded from the sum and the count.
    """
    if mask_logits.dim() == 4:
        if mask_logits.shape[1] != 1:
            raise ValueError(f"mask_logits: expected (B,1,h,w), got {tuple(mask_logits.shape)}")
        mask_logits = mask_logits[:, 0]
    if target.dim() != 3 or target.shape[0] != mask_logits.shape[0]:
        raise ValueError(f"target: expected (B,H,W) with B={mask_logits.shape[0]}, got {tuple(target.shape)}")
    if target.shape[-2:] != mask_logits.shape[-2:]:
        target = F.interpolate(target[:, None].float(), size=mask_logits.shape[-2:], mode="nearest")[:, 0]
    target = target.long()
    bad = (target != 0) & (target != 1) & (target != ignore_index)
    if bad.any():
        raise ValueError(f"target: expected values in {{0, 1, {ignore_index}}}, got {torch.unique(target[bad])[:5].tolist()}")
    valid = target != ignore_index
    # where() instead of multiplying by 0: keeps ignored pixels' gradient exactly 0 even for extreme logits.
    safe_logits = torch.where(valid, mask_logits, torch.zeros_like(mask_logits))
    per_pixel = F.binary_cross_entropy_with_logits(safe_logits, (target == 1).to(mask_logits.dtype),
                                                   reduction="none")
    count = valid.sum()
    return torch.where(valid, per_pixel, torch.zeros_like(per_pixel)).sum() / count.clamp(min=1)


def cris_samples(label_map: np.ndarray | Tensor, rng: np.random.Generator | None = None, num_classes: int = 20,
                 negatives: int = 0) -> list[tuple[int, np.ndarray]]:
    """CRIS training samples from a semantic label map (H,W) with 0 background, k+1 for class k, 255 ignore.

    One sample per present class: (k 0-based, uint8 target with 1 on class k, 0 elsewhere, 255 kept).
    negatives: how many absent classes (drawn with `rng`) to add with an all-0 target (255 kept). Default 0:
    the VOC pseudo-labels come with image-level labels, so at inference CRIS is asked only about classes
    that are present (predict_semantic's `present`) or thresholded; negatives teach it to answer "nowhere"
    for absent prompts, useful without image labels, at the cost of diluting the positives.
    """
    labels = label_map.cpu().numpy() if isinstance(label_map, Tensor) else np.asarray(label_map)
    if labels.ndim != 2:
        raise ValueError(f"label_map: expected an (H,W) label map, got shape {labels.shape}")
    present = [int(v) - 1 for v in np.unique(labels) if 0 < v <= num_classes]
    ignore = labels == IGNORE
    samples = []
    for k in present:
        target = (labels == k + 1).astype(np.uint8)
        target[ignore] = IGNORE
        samples.append((k, target))
    if negatives > 0:
        absent = [k for k in range(num_classes) if k not in present]
        if rng is None:
            raise ValueError("rng: a numpy Generator is needed to draw negatives")
        for k in rng.permutation(absent)[:negatives]:
            target = np.zeros(labels.shape, np.uint8)
            target[ignore] = IGNORE
            samples.append((int(k), target))
    return samples
