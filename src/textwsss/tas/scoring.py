"""TAS mask scoring (METHODS.md section 6): S = S_v + alpha * S_p + lambda * S_n.

For a proposal m of image I, I_m = crop(mask(I, m)): pixels outside m set to `fill` (0 or the
image mean), cropped to m's bounding box plus a margin, padded to a square with the same fill
(so the matcher's square resize keeps the aspect ratio), as [0,1] float.
- S_v = sim(E_v(I_m), E_t(T_r))                  the matcher's image-concept similarity, in (0, 1);
- S_p = cos(E_t(caption(I_m)), E_t(T_r))         text-text cosine of the matcher's concept features;
                                                 off (None) without a captioner or when the matcher
                                                 cannot encode free text (closed vocabulary);
- S_n = -mean_{T in T_n} sim(E_v(I_m), E_t(T))   off (None) when T_n is empty.
All crops of an image are encoded in one batched encode_images call.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from textwsss.tas.captioner import Captioner, is_synonym, noun_phrases
from textwsss.tas.nouns import target_noun

log = logging.getLogger(__name__)


def combine_scores(s_v: np.ndarray, s_p: np.ndarray | None, s_n: np.ndarray | None,
                   alpha: float = 0.1, lam: float = 0.1) -> np.ndarray:
    """S = s_v + alpha * s_p + lam * s_n; a None term is off (contributes 0)."""
    s = np.asarray(s_v, dtype=np.float64).copy()
    if s_p is not None:
        s += alpha * np.asarray(s_p, dtype=np.float64)
    if s_n is not None:
        s += lam * np.asarray(s_n, dtype=np.float64)
    return s


def crop_masked(image: np.ndarray, mask: np.ndarray, margin: float = 0.1, fill: str = "zero") -> Tensor:
    """(3,S,S) float in [0,1]: the image outside `mask` set to the fill, cropped to the mask's
    bounding box enlarged by `margin` (fraction of its size per side), padded to a square.

    fill: 'zero' (black, default) or 'mean' (the image's mean colour).
    """
    if image.ndim != 3 or mask.shape != image.shape[:2]:
        raise ValueError(f"mask: expected shape {image.shape[:2]} matching the image, got {mask.shape}")
    if fill not in ("zero", "mean"):
        raise ValueError(f"fill: expected 'zero' or 'mean', got {fill!r}")
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("mask: expected a non-empty mask")
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0)
    value = x.mean(dim=(1, 2), keepdim=True) if fill == "mean" else torch.zeros(3, 1, 1)
    m = torch.from_numpy(np.asarray(mask, dtype=bool))
    x = torch.where(m, x, value)
    height, width = mask.shape
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    dy, dx = int(round(margin * (y1 - y0))), int(round(margin * (x1 - x0)))
    y0, y1, x0, x1 = max(0, y0 - dy), min(height, y1 + dy), max(0, x0 - dx), min(width, x1 + dx)
    crop = x[:, y0:y1, x0:x1]
    side = max(crop.shape[1:])
    out = value.expand(3, side, side).clone()
    top, left = (side - crop.shape[1]) // 2, (side - crop.shape[2]) // 2
    out[:, top:top + crop.shape[1], left:left + crop.shape[2]] = crop
    return out


def masked_crops(image: np.ndarray, masks: np.ndarray, size: int, margin: float = 0.1, fill: str = "zero") -> Tensor:
    """(M,3,size,size) batch of crop_masked for every mask."""
    crops = [F.interpolate(crop_masked(image, m, margin, fill)[None], size=(size, size), mode="bilinear",
                           align_corners=False)[0] for m in masks]
    return torch.stack(crops)


def text_cosine(matcher, texts_a: Sequence[str], texts_b: Sequence[str]) -> Tensor | None:
    """(A,B) cosine of the matcher's concept features, or None if it cannot encode these texts."""
    try:
        fa, fb = matcher.encode_concepts(list(texts_a)), matcher.encode_concepts(list(texts_b))
    except ValueError as err:
        log.debug("text-text similarity unavailable: %s", err)
        return None
    return F.normalize(fa.float(), dim=-1) @ F.normalize(fb.float(), dim=-1).T


def accepts_free_text(matcher, text: str) -> bool:
    """Whether the matcher can encode arbitrary text (open vocabulary) - probed with `text`."""
    try:
        return bool(matcher.check_concepts([text], background=False))
    except ValueError:
        return False


def vocabulary_negatives(image: np.ndarray, matcher, vocabulary: Sequence[str], target: str,
                         top_k: int = 3, threshold: float = 0.5) -> list[str]:
    """T_n without a captioner: the vocabulary concepts scoring >= threshold on the whole image,
    best first, at most top_k, excluding the target and its synonyms."""
    candidates = [c for c in dict.fromkeys(vocabulary) if not is_synonym(c, target)]
    if not candidates or top_k < 1:
        return []
    whole = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div(255.0)
    with torch.no_grad():
        sims = matcher.similarity(matcher.encode_images(whole), matcher.encode_concepts(candidates))[0]
    order = torch.argsort(sims, descending=True, stable=True).tolist()
    return [candidates[i] for i in order if float(sims[i]) >= threshold][:top_k]


def caption_negatives(caption: str, target: str, vocabulary: Sequence[str] | None = None) -> list[str]:
    """T_n with a captioner: noun phrases of the whole-image caption minus synonyms of the target.
    With a `vocabulary` (closed-vocabulary matcher) each phrase is reduced to its vocabulary noun."""
    out = []
    for phrase in noun_phrases(caption):
        if is_synonym(phrase, target):
            continue
        if vocabulary is not None:
            try:
                phrase = target_noun(phrase, vocabulary)
            except ValueError:
                continue
            if is_synonym(phrase, target):
                continue
        out.append(phrase)
    return list(dict.fromkeys(out))


@dataclass
class CropFeatures:
    """The masked crops of one image's proposals and their image features (expression-independent)."""

    keep: np.ndarray  # (M,) bool: non-empty masks (empty ones score -inf)
    images: Tensor  # (K,3,S,S) crops of the kept masks
    features: Tensor  # (K,D) matcher features of the crops


def encode_crops(image: np.ndarray, masks: np.ndarray, matcher, margin: float = 0.1,
                 fill: str = "zero") -> CropFeatures:
    """Crops every non-empty mask and encodes all crops in one batched encode_images call."""
    masks = np.asarray(masks, dtype=bool)
    keep = masks.any(axis=(1, 2))
    if not keep.any():
        raise ValueError("masks: expected at least one non-empty mask")
    images = masked_crops(image, masks[keep], matcher.input_size, margin, fill)
    with torch.no_grad():
        features = matcher.encode_images(images)
    return CropFeatures(keep, images, features)


def score_masks(image: np.ndarray, masks: np.ndarray, query: str, matcher, *, negatives: Sequence[str] = (),
                captioner: Captioner | None = None, alpha: float = 0.1, lam: float = 0.1,
                margin: float = 0.1, fill: str = "zero",
                crops: CropFeatures | None = None) -> dict[str, np.ndarray | None]:
    """{'s_v', 's_p', 's_n', 's'} per mask ((M,) arrays; s_p / s_n None when off).

    query: the text T_r the matcher scores (the expression, or its class noun for a closed
    vocabulary); negatives: T_n; captioner: enables S_p; alpha, lam: the weights of S_p and S_n;
    crops: the image's encoded crops from `encode_crops` (reused across expressions), else computed here.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2] or len(masks) == 0:
        raise ValueError(f"masks: expected (M,H,W) with M >= 1 and (H,W) = {image.shape[:2]}, got {masks.shape}")
    if crops is None:
        crops = encode_crops(image, masks, matcher, margin, fill)
    elif len(crops.keep) != len(masks):
        raise ValueError(f"crops: encoded for {len(crops.keep)} masks, got {len(masks)} masks")
    keep, feats = crops.keep, crops.features
    with torch.no_grad():
        s_v_kept = matcher.similarity(feats, matcher.encode_concepts([query]))[:, 0].double().cpu().numpy()
        s_n_kept = None
        if negatives:
            s_n_kept = -matcher.similarity(feats, matcher.encode_concepts(list(negatives))).double().mean(1).cpu().numpy()
    s_p_kept = None
    if captioner is not None:
        captions = [captioner.caption((c.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)) for c in crops.images]
        cos = text_cosine(matcher, captions, [query])
        s_p_kept = None if cos is None else cos[:, 0].double().cpu().numpy()

    def full(values: np.ndarray | None, empty: float) -> np.ndarray | None:
        if values is None:
            return None
        out = np.full(len(masks), empty)
        out[keep] = values
        return out

    s_v, s_p, s_n = full(s_v_kept, -np.inf), full(s_p_kept, 0.0), full(s_n_kept, 0.0)
    return {"s_v": s_v, "s_p": s_p, "s_n": s_n, "s": combine_scores(s_v, s_p, s_n, alpha, lam)}
