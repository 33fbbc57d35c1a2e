"""The tas stage's library: run TAS on every expression of the referring benchmark and score it.

Each image is prepared once (proposals + encoded crops) and shared by all its expressions. Images
are processed at a reduced size (long side `max_side`) for speed; the chosen mask is brought back to
the original resolution (nearest) before it is scored against the full-resolution target.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..voc import image_path, read_image
from .pipeline import prepare_image, segment_expression
from .referring import Expression, evaluate

log = logging.getLogger(__name__)


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.uint8))[None, None].float()
    return F.interpolate(t, size=size, mode="nearest")[0, 0].numpy() > 0.5


def run_benchmark(root, exprs: Sequence[Expression], proposer, matcher, *, vocabulary: Sequence[str],
                  captioner=None, alpha: float = 0.1, lam: float = 0.1, use_rectifier: bool = True,
                  use_negatives: bool = True, fill: str = "mean", margin: float = 0.1, max_side: int = 0,
                  seg_model=None, device: str = "cpu") -> tuple[dict, list[np.ndarray], float]:
    """(scores as referring.evaluate gives them, predicted masks, seconds per expression)."""
    from ..make_cams import working_size

    by_image: dict[str, list[int]] = defaultdict(list)
    for n, e in enumerate(exprs):
        by_image[e.id].append(n)
    preds: list[np.ndarray | None] = [None] * len(exprs)
    start = time.perf_counter()
    with tqdm(total=len(exprs), desc="tas", unit="expr", disable=None) as bar:
        for image_id in sorted(by_image):
            full = read_image(image_path(root, image_id))
            size = working_size(*full.shape[:2], max_side)
            image = _resize_image(full, size) if size != full.shape[:2] else full
            extra = None
            if seg_model is not None:
                from ..segment import predict_labels

                extra = predict_labels(seg_model, image, device=device)
            prepared = prepare_image(image, proposer, matcher, extra_label_map=extra, margin=margin, fill=fill)
            for n in by_image[image_id]:
                mask, _ = segment_expression(image, exprs[n].text, proposer, matcher, captioner=captioner,
                                             vocabulary=vocabulary, alpha=alpha, lam=lam,
                                             use_rectifier=use_rectifier, use_negatives=use_negatives,
                                             margin=margin, fill=fill, prepared=prepared)
                preds[n] = _resize_mask(mask, full.shape[:2]) if mask.shape != full.shape[:2] else mask
                bar.update(1)
    seconds = (time.perf_counter() - start) / max(1, len(exprs))
    return evaluate(preds, exprs), preds, seconds
