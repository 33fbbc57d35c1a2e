"""Spatial rectifier of TAS: a direction word in the expression restricts which masks may win.

Rule (documented and tested):
1. `direction_of(expression)` finds the first direction word ('left', 'right', 'top', 'bottom'
   families, whole words only, so 'upright' and 'bright' do not count).
2. `rectify(masks, scores, direction)` computes each mask's centroid (x, y) in pixels and keeps the
   masks whose centroid lies in that half of the image (left: x < W/2, right: x >= W/2,
   top: y < H/2, bottom: y >= H/2). The answer is the best-scoring kept mask.
3. If no mask lies in that half, it falls back to the `fallback_top_k` best-scoring masks and
   returns the one whose centroid is most extreme in that direction (smallest x for left, ...),
   so the direction still decides among plausible masks.
Empty masks never qualify (they have no centroid); with no direction the plain argmax is returned.
"""
from __future__ import annotations

import re

import numpy as np

DIRECTIONS = ("left", "right", "top", "bottom")

# Variants per direction, matched as whole words (\b...\b) on the lower-cased expression.
_PATTERNS: dict[str, str] = {
    "left": r"left|leftmost|left-most|lefthand|left-hand",
    "right": r"right|rightmost|right-most|righthand|right-hand",
    "top": r"top|topmost|top-most|up|upper|uppermost|above|highest",
    "bottom": r"bottom|bottommost|bottom-most|down|lower|lowest|below",
}
_DIRECTION_RE = re.compile(
    "|".join(rf"(?P<{name}>\b(?:{pattern})\b)" for name, pattern in _PATTERNS.items()))


def direction_of(expression: str) -> str | None:
    """The first direction word of the expression as 'left'|'right'|'top'|'bottom', or None."""
    if not isinstance(expression, str):
        raise ValueError(f"expression: expected a string, got {type(expression).__name__}")
    match = _DIRECTION_RE.search(expression.lower())
    return match.lastgroup if match else None


def centroids(masks: np.ndarray) -> np.ndarray:
    """(M,2) centroid (x, y) of each (M,H,W) mask; NaN for an empty mask."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks: expected a (M,H,W) array, got shape {masks.shape}")
    area = masks.sum(axis=(1, 2)).astype(np.float64)
    ys = np.arange(masks.shape[1], dtype=np.float64)
    xs = np.arange(masks.shape[2], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (masks.sum(axis=1) * xs).sum(axis=1) / area
        cy = (masks.sum(axis=2) * ys).sum(axis=1) / area
    return np.stack([cx, cy], axis=1)


def rectify(masks: np.ndarray, scores: np.ndarray, direction: str | None, fallback_top_k: int = 3) -> int:
    """Index of the winning mask under the rule in the module docstring.

    masks: (M,H,W) bool; scores: (M,) higher is better; direction: one of DIRECTIONS or None;
    fallback_top_k: how many best-scoring masks the fallback chooses among (default 3).
    """
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if masks.ndim != 3 or scores.shape != (masks.shape[0],) or masks.shape[0] == 0:
        raise ValueError(f"masks/scores: expected (M,H,W) and (M,) with M >= 1, got {masks.shape} and {scores.shape}")
    if direction is None:
        return int(np.argmax(scores))
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: expected one of {DIRECTIONS} or None, got {direction!r}")
    if fallback_top_k < 1:
        raise ValueError(f"fallback_top_k: expected >= 1, got {fallback_top_k}")
    height, width = masks.shape[1:]
    cxy = centroids(masks)
    valid = ~np.isnan(cxy[:, 0])
    x, y = np.nan_to_num(cxy[:, 0]), np.nan_to_num(cxy[:, 1])
    inside = {"left": x < width / 2, "right": x >= width / 2,
              "top": y < height / 2, "bottom": y >= height / 2}[direction] & valid
    if inside.any():
        return int(np.argmax(np.where(inside, scores, -np.inf)))
    ranked = [i for i in np.argsort(-scores, kind="stable") if valid[i]][:fallback_top_k]
    if not ranked:
        return int(np.argmax(scores))
    # extremeness: smaller x is "more left", larger y "more bottom"
    key = {"left": x, "right": -x, "top": y, "bottom": -y}[direction]
    return int(min(ranked, key=lambda i: (key[i], -scores[i])))
