"""tas: training-free zero-shot referring segmentation (TAS) on expressions built from the val masks.

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

from ..data.images import working_size
from ..data.prepared import PreparedDataset
from ..guide.factory import matcher_from_params
from ..io import write_json
from ..params import resolve_device
from ..tas.captioner import build_captioner
from ..tas.proposals import build_proposer
from ..tas.referring import Expression, build_expressions, evaluate, save_expressions
from ..tas.segmenter import prepare_image, segment_expression
from .workspace import Workspace

log = logging.getLogger(__name__)


def _resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(mask.astype(np.uint8))[None, None].float()
    return F.interpolate(t, size=size, mode="nearest")[0, 0].numpy() > 0.5


def run_benchmark(data: PreparedDataset, exprs: Sequence[Expression], proposer, matcher, *,
                  vocabulary: Sequence[str], captioner=None, alpha: float = 0.1, lam: float = 0.1,
                  use_rectifier: bool = True, use_negatives: bool = True, fill: str = "mean", margin: float = 0.1,
                  max_side: int = 0, seg_model=None, device: str = "cpu") -> tuple[dict, list[np.ndarray], float]:
    """(scores as referring.evaluate gives them, predicted masks, seconds per expression)."""
    by_image: dict[str, list[int]] = defaultdict(list)
    for n, e in enumerate(exprs):
        by_image[e.id].append(n)
    preds: list[np.ndarray | None] = [None] * len(exprs)
    start = time.perf_counter()
    with tqdm(total=len(exprs), desc="tas", unit="expr", disable=None) as bar:
        for image_id in sorted(by_image):
            full = data.read_image(image_id)
            size = working_size(*full.shape[:2], max_side)
            image = _resize_image(full, size) if size != full.shape[:2] else full
            extra = None
            if seg_model is not None:
                from ..segment import predict_labels

                extra = predict_labels(seg_model, image, seg_model.classes, device=device)
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


def run(params, ws: Workspace) -> None:
    t = params.tas
    torch.manual_seed(params.seed)
    device = resolve_device(params.device)
    data = ws.dataset(params)
    exprs = build_expressions(data, data.ids("val"), min_area=t.min_area)
    save_expressions(ws.tas / "expressions.jsonl", exprs)
    if not exprs:
        write_json(ws.metrics / "tas.json", {"miou": None, "oiou": None, "n": 0,
                                              "note": data.describe_scoring("val", data.with_masks(data.ids("val")))})
        log.warning("TAS not run: no val image has a mask to build referring expressions from")
        return
    matcher = matcher_from_params(params, data.classes, device)
    if t.proposer == "sam":
        proposer = build_proposer("sam", checkpoint=t.sam_checkpoint, min_mask_region_area=t.min_area, device=device)
    else:
        proposer = build_proposer("superpixel", min_area=t.min_area, max_masks=t.max_masks)
    captioner = build_captioner(t.captioner, device=device)
    seg_model = None
    if t.use_seg_model:  # after the matcher, as before: the order of the random inits stays the same
        seg_model, _ = ws.load_stage_model("train_seg", device)
    vocabulary = list(data.classes.prompts) + matcher.check_concepts(params.zeroshot.background_words,
                                                                    background=True)
    scores, _, seconds = run_benchmark(data, exprs, proposer, matcher, vocabulary=vocabulary, captioner=captioner,
                                       alpha=t.alpha, lam=t.lam, use_rectifier=t.rectifier,
                                       use_negatives=t.negatives, fill=t.fill, margin=t.margin,
                                       max_side=t.max_side, seg_model=seg_model, device=device)
    scores["seconds_per_expression"] = round(seconds, 3)
    write_json(ws.metrics / "tas.json", scores)
    log.info("TAS on %d expressions: mIoU %.2f, oIoU %.2f, %.2f s per expression", scores["n"], scores["miou"],
             scores["oiou"], seconds)
