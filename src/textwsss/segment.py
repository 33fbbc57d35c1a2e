"""Inference and evaluation of a trained segmentation model (DeepLab or CRIS): used by the eval_seg stage
and by the `textwsss predict` / `textwsss evaluate` commands, so both give the same numbers."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .datasets import to_tensor
from .metrics import ConfusionMatrix
from .models.runtime import for_inference, image_probe
from .voc import CLASS_NAMES, image_path, mask_path, read_image, read_mask, readable

log = logging.getLogger(__name__)


@torch.inference_mode()
def class_probabilities(model, image: np.ndarray, scales: Sequence[float] = (1.0,), flip: bool = False,
                        device: str | torch.device = "cpu") -> np.ndarray:
    """(21, H, W) per-pixel class probabilities, averaged over scales and flips.

    DeepLab: softmax of its logits. CRIS: each class prompt's sigmoid map, with the background
    probability the model's threshold, renormalised (so argmax equals CRIS's own thresholded rule).
    """
    x = to_tensor(image)[None].to(device)
    h, w = image.shape[:2]
    total = torch.zeros((len(CLASS_NAMES) + 1, h, w), device=device)
    n = 0
    for s in scales:
        xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        for flipped in ([False, True] if flip else [False]):
            inp = xs.flip(-1) if flipped else xs
            probs = _probs(model, inp)
            probs = probs.flip(-1) if flipped else probs
            total += F.interpolate(probs, size=(h, w), mode="bilinear", align_corners=False)[0]
            n += 1
    return (total / n).cpu().numpy()


def _probs(model, x: torch.Tensor) -> torch.Tensor:
    if model.spec["type"] == "cris":
        sig = model.class_maps(x, [readable(c) for c in CLASS_NAMES])  # (1, 20, h, w) sigmoid maps
        bg = torch.full_like(sig[:, :1], model.bg_threshold)
        stacked = torch.cat([bg, sig], 1)
        return stacked / stacked.sum(1, keepdim=True)
    return torch.softmax(model(x), 1)


def predict_labels(model, image: np.ndarray, *, scales: Sequence[float] = (1.0,), flip: bool = False,
                   crf=None, device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 (H, W) VOC label map. `crf`: a textwsss.crf.CRFParams to refine the probabilities, or None."""
    probs = class_probabilities(model, image, scales, flip, device)
    if crf is not None:
        from .crf import crf_from_probs

        probs = crf_from_probs(image, probs, crf)
    return probs.argmax(0).astype(np.uint8)


def evaluate_model(model, root: Path, ids: Sequence[str], *, scales: Sequence[float] = (1.0,), flip: bool = False,
                   crf=None, device: str | torch.device = "cpu", figures_dir: Path | None = None,
                   figure_ids: Sequence[str] = ()) -> tuple[dict, np.ndarray]:
    """Scores the model on a split: (summary with miou/pixel_acc/per_class, confusion matrix)."""
    from .viz import label_figure

    # CRIS needs prompts besides images, so only DeepLab gets the probe that allows folding its BatchNorm.
    model = for_inference(model, device, probe=None if model.spec["type"] == "cris" else image_probe(device))
    cm = ConfusionMatrix()
    for i in tqdm(ids, desc="evaluate", unit="img", disable=None):
        image = read_image(image_path(root, i))
        gt = read_mask(mask_path(root, i))
        pred = predict_labels(model, image, scales=scales, flip=flip, crf=crf, device=device)
        cm.update(pred, gt)
        if figures_dir is not None and i in figure_ids:
            label_figure(Path(figures_dir) / f"{i}.png", image, [("ground truth", gt), ("prediction", pred)])
    summary = cm.summary()
    return {"miou": summary["miou"], "pixel_acc": summary["pixel_acc"], "per_class": summary["per_class"],
            "absent": summary["absent"]}, cm.matrix
