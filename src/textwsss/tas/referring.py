"""A deterministic referring-expression benchmark built from VOC ground-truth masks.

For each image and each class present, the class mask (label k+1; 255 counts as not-class) is
split into 8-connected components; components smaller than `min_area` pixels are dropped (they
are fragments, and no expression refers to them).
- exactly one component left  -> kind 'plain': "a {class}" ("an" before a vowel), target = it;
- several components          -> kind 'directional', only for components *separated* along an axis:
    "the {class} on the left"  for the component whose bounding box ends (last column + 1) at or
                                before the first column of every other kept component;
    "the {class} on the right" for the one whose first column is at or after the end of every other;
    "the {class} at the top" / "at the bottom" likewise along rows.
  Several components that overlap along both axes give no expression (the text would be ambiguous).
Class names are readable ('dining table'). The order is the order of `ids`, then class index,
then left/right/top/bottom, so two runs give identical lists.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from skimage.measure import label as connected_components

from textwsss.data.classes import ClassList
from textwsss.io import atomic_path

KINDS = ("plain", "directional")
DEFAULT_MIN_AREA = 800  # px, as TAS's min mask region at VOC's full resolution


@dataclass(frozen=True)
class Expression:
    """One referring expression: image id, text, kind, 0-based class index and name, and its target."""

    id: str
    text: str
    kind: str
    class_index: int
    class_name: str
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive
    area: int
    mask: np.ndarray = field(repr=False, compare=False)  # (H,W) bool target component

    def to_record(self) -> dict:
        return {"id": self.id, "text": self.text, "kind": self.kind,
                "class": self.class_name, "bbox": list(self.bbox), "area": self.area}


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def separated_extremes(bboxes: Sequence[tuple[int, int, int, int]]) -> dict[str, int]:
    """{direction: index} of the components separated from all others (rule in the module docstring)."""
    found: dict[str, int] = {}
    if len(bboxes) < 2:
        return found
    for i, (x0, y0, x1, y1) in enumerate(bboxes):
        others = [b for j, b in enumerate(bboxes) if j != i]
        if all(x1 <= b[0] for b in others):
            found["left"] = i
        if all(x0 >= b[2] for b in others):
            found["right"] = i
        if all(y1 <= b[1] for b in others):
            found["top"] = i
        if all(y0 >= b[3] for b in others):
            found["bottom"] = i
    return found


_PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}


def expressions_of_mask(image_id: str, mask: np.ndarray, classes: ClassList,
                        min_area: int = DEFAULT_MIN_AREA) -> list[Expression]:
    """Expressions for one ground-truth label map (H,W) uint8 with 0..K and 255; the noun is the class's prompt
    name."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask of '{image_id}': expected a (H,W) label map, got shape {mask.shape}")
    if min_area < 1:
        raise ValueError(f"min_area: expected >= 1 pixel, got {min_area}")
    out: list[Expression] = []
    for k in range(classes.num_classes):
        class_mask = mask == k + 1
        if not class_mask.any():
            continue
        comps = connected_components(class_mask, connectivity=2)
        parts = [comps == c for c in range(1, int(comps.max()) + 1)]
        parts = [p for p in parts if int(p.sum()) >= min_area]
        noun, name = classes.prompts[k], classes.names[k]
        if len(parts) == 1:
            p = parts[0]
            out.append(Expression(image_id, f"{_article(noun)} {noun}", "plain", k, name, _bbox(p), int(p.sum()), p))
            continue
        bboxes = [_bbox(p) for p in parts]
        extremes = separated_extremes(bboxes)
        for direction in ("left", "right", "top", "bottom"):
            if direction in extremes:
                i = extremes[direction]
                out.append(Expression(image_id, f"the {noun} {_PHRASE[direction]}", "directional", k, name,
                                      bboxes[i], int(parts[i].sum()), parts[i]))
    return out


def build_expressions(data, ids: Sequence[str], min_area: int = DEFAULT_MIN_AREA) -> list[Expression]:
    """Expressions of the masks of `ids` in a PreparedDataset (ids without a mask give none), in a deterministic
    order. min_area: components smaller than this many pixels are ignored (default 800)."""
    out: list[Expression] = []
    for image_id in data.with_masks(ids):
        out.extend(expressions_of_mask(image_id, data.read_mask(image_id), data.classes, min_area))
    return out


def save_expressions(path: str | Path, exprs: Sequence[Expression]) -> None:
    """JSON lines, one per expression: id, text, kind, class, bbox [x0,y0,x1,y1], area (atomic write)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(json.dumps(e.to_record()) + "\n" for e in exprs))


def mask_iou_terms(pred: np.ndarray, target: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two boolean masks of the same shape."""
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    return int((pred & target).sum()), int((pred | target).sum())


def _summary(terms: list[tuple[int, int]]) -> dict:
    if not terms:
        return {"miou": 0.0, "oiou": 0.0, "n": 0}
    ious = [i / u if u else 1.0 for i, u in terms]  # empty prediction and target agree perfectly
    inter, union = sum(i for i, _ in terms), sum(u for _, u in terms)
    return {"miou": 100.0 * float(np.mean(ious)), "oiou": 100.0 * inter / union if union else 100.0,
            "n": len(terms)}


def evaluate(pred_masks: Sequence[np.ndarray], exprs: Sequence[Expression]) -> dict:
    """{"miou", "oiou", "n", "by_kind": {kind: {...}}}: mIoU = mean per-sample IoU, oIoU = sum of
    intersections / sum of unions, both in percent."""
    if len(pred_masks) != len(exprs):
        raise ValueError(f"pred_masks: expected {len(exprs)} masks (one per expression), got {len(pred_masks)}")
    terms = [mask_iou_terms(p, e.mask) for p, e in zip(pred_masks, exprs)]
    result = _summary(terms)
    result["by_kind"] = {kind: _summary([t for t, e in zip(terms, exprs) if e.kind == kind])
                         for kind in KINDS if any(e.kind == kind for e in exprs)}
    return result
