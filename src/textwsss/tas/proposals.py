"""Class-agnostic mask proposals for TAS: `propose(image uint8 HxWx3) -> (M,H,W) bool`.

- `SuperpixelProposer` (offline default, no weights): SLIC superpixels at two granularities, each
  grouped bottom-up over the region adjacency graph (greedy merge of the most similar adjacent
  regions by colour, size and fill, in the spirit of selective search); every region formed on the
  way is a candidate, so the set spans parts to whole objects. Candidates are filtered by area,
  de-duplicated (IoU above `dedup_iou`) and capped at `max_masks`.
- optional extra masks: connected components per class of a trained model's label map.
- `SamProposer`: segment_anything's automatic mask generator (TAS's choice), when installed.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from skimage.measure import label as connected_components
from skimage.segmentation import slic

log = logging.getLogger(__name__)

#: Pixels of a full-resolution VOC image (500 x 375): area thresholds given "at full resolution"
#: are scaled by (H*W / REFERENCE_PIXELS) so tiny test images keep proportionate proposals.
REFERENCE_PIXELS = 500 * 375


class MaskProposer(Protocol):
    def propose(self, image: np.ndarray) -> np.ndarray: ...


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 (H,W,3), got {image.dtype} {image.shape}")
    return image


def scaled_min_area(min_area: float, height: int, width: int) -> int:
    """min_area (pixels at VOC full resolution) scaled to an image of height x width, at least 1."""
    return max(1, int(round(min_area * height * width / REFERENCE_PIXELS)))


def label_map_components(label_map: np.ndarray, min_area: int, ignore: tuple[int, ...] = (0, 255)) -> np.ndarray:
    """(M,H,W) bool: one mask per 8-connected component per label (labels in `ignore` skipped)."""
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"extra_label_map: expected a (H,W) label map, got shape {label_map.shape}")
    masks = []
    for value in np.unique(label_map):
        if int(value) in ignore:
            continue
        comps = connected_components(label_map == value, connectivity=2)
        masks += [comps == c for c in range(1, int(comps.max()) + 1) if (comps == c).sum() >= min_area]
    return np.stack(masks) if masks else np.zeros((0, *label_map.shape), dtype=bool)


def deduplicate(masks: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Drops each mask whose IoU with an earlier kept mask exceeds iou_threshold (order preserved)."""
    if len(masks) == 0:
        return masks
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    areas = flat.sum(1)
    inter = flat @ flat.T
    iou = inter / np.maximum(areas[:, None] + areas[None, :] - inter, 1.0)
    keep: list[int] = []
    for i in range(len(masks)):
        if all(iou[i, j] <= iou_threshold for j in keep):
            keep.append(i)
    return masks[keep]


def _adjacent_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    """Pairs (a, b), a < b, of labels that touch horizontally or vertically."""
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        differ = a != b
        lo, hi = np.minimum(a[differ], b[differ]), np.maximum(a[differ], b[differ])
        pairs.update(zip(lo.tolist(), hi.tolist()))
    return pairs


def _colour_histograms(image: np.ndarray, labels: np.ndarray, n: int, bins: int) -> np.ndarray:
    """(n, 3*bins) L1-normalised per-channel colour histograms of each label."""
    quantised = (image.astype(np.int64) * bins) // 256  # (H,W,3) in 0..bins-1
    hist = np.zeros((n, 3 * bins))
    flat = labels.ravel()
    for ch in range(3):
        np.add.at(hist, (flat, ch * bins + quantised[..., ch].ravel()), 1.0)
    return hist / np.maximum(hist.sum(1, keepdims=True), 1.0)


def hierarchical_grouping(image: np.ndarray, superpixels: np.ndarray, bins: int = 25) -> list[np.ndarray]:
    """Every region of a greedy bottom-up grouping of adjacent superpixels, as superpixel-id arrays.

    Starting from the superpixels, the most similar adjacent pair is merged until one region is
    left; each merge yields a new candidate (so the output spans parts to whole objects). Similarity
    of regions r, s = colour-histogram intersection + size term (1 - (|r|+|s|)/|image|, merges small
    regions first) + fill term (1 - (|bbox(r u s)| - |r| - |s|)/|image|, prefers regions that fill
    each other's gaps); all three in [0, 1], summed with equal weight.
    """
    n = int(superpixels.max()) + 1
    height, width = superpixels.shape
    total = float(height * width)
    hist = _colour_histograms(image, superpixels, n, bins)
    size = np.bincount(superpixels.ravel(), minlength=n).astype(np.float64)
    rows, cols = np.indices(superpixels.shape)
    flat = superpixels.ravel()
    y0 = np.full(n, height); x0 = np.full(n, width); y1 = np.zeros(n, int); x1 = np.zeros(n, int)
    np.minimum.at(y0, flat, rows.ravel()); np.minimum.at(x0, flat, cols.ravel())
    np.maximum.at(y1, flat, rows.ravel() + 1); np.maximum.at(x1, flat, cols.ravel() + 1)
    regions = {i: {"members": np.array([i]), "hist": hist[i], "size": size[i],
                   "box": (int(y0[i]), int(x0[i]), int(y1[i]), int(x1[i]))} for i in range(n) if size[i] > 0}
    neighbours: dict[int, set[int]] = {i: set() for i in regions}
    for a, b in _adjacent_pairs(superpixels):
        neighbours[a].add(b)
        neighbours[b].add(a)

    def box_union(p, q):
        return (min(p[0], q[0]), min(p[1], q[1]), max(p[2], q[2]), max(p[3], q[3]))

    def similarity(a: int, b: int) -> float:
        ra, rb = regions[a], regions[b]
        box = box_union(ra["box"], rb["box"])
        box_area = (box[2] - box[0]) * (box[3] - box[1])
        return (float(np.minimum(ra["hist"], rb["hist"]).sum()) + 1.0 - (ra["size"] + rb["size"]) / total
                + 1.0 - (box_area - ra["size"] - rb["size"]) / total)

    sims = {(a, b): similarity(a, b) for a in neighbours for b in neighbours[a] if a < b}
    out = [r["members"] for r in regions.values()]
    next_id = n
    while sims:
        a, b = max(sims, key=lambda k: (sims[k], -k[0], -k[1]))  # ties broken by id: deterministic
        ra, rb = regions.pop(a), regions.pop(b)
        merged_size = ra["size"] + rb["size"]
        regions[next_id] = {"members": np.concatenate([ra["members"], rb["members"]]),
                            "hist": (ra["hist"] * ra["size"] + rb["hist"] * rb["size"]) / merged_size,
                            "size": merged_size, "box": box_union(ra["box"], rb["box"])}
        out.append(regions[next_id]["members"])
        nb = (neighbours.pop(a) | neighbours.pop(b)) - {a, b}
        sims = {k: v for k, v in sims.items() if a not in k and b not in k}
        for c in nb:
            neighbours[c] -= {a, b}
            neighbours[c].add(next_id)
            sims[(c, next_id)] = similarity(c, next_id)
        neighbours[next_id] = nb
        next_id += 1
    return out


class SuperpixelProposer:
    """SLIC superpixels grouped bottom-up (see `hierarchical_grouping`), on a downscaled copy.

    n_segments: SLIC superpixels per grouping, one grouping per entry (default (40, 100): two
      granularities for diversity); compactness: SLIC colour/space trade-off (10);
    max_side: the image is downscaled so its longer side is at most this (256) for speed; masks
      come back at full resolution;
    min_area: smallest mask in pixels at VOC full resolution (800, scaled by image size);
    max_area_fraction: drop masks covering more of the image (0.95: they carry no localisation);
    dedup_iou: masks overlapping a kept one above this IoU are duplicates (0.75);
    max_masks: keep at most this many (96), in grouping order (small regions first, so parts and
      objects both survive the cap better than a largest-first cut would). Deterministic.
    """

    def __init__(self, n_segments: tuple[int, ...] | int = (40, 100), compactness: float = 10.0,
                 max_side: int = 256, min_area: float = 800.0, max_area_fraction: float = 0.95,
                 dedup_iou: float = 0.75, max_masks: int = 96) -> None:
        n_segments = (n_segments,) if isinstance(n_segments, int) else tuple(n_segments)
        if not n_segments or min(n_segments) < 2 or max_masks < 1 or not 0 < max_area_fraction <= 1 or max_side < 16:
            raise ValueError("SuperpixelProposer: expected n_segments >= 2, max_masks >= 1, max_side >= 16 and "
                             f"0 < max_area_fraction <= 1; got {n_segments}, {max_masks}, {max_side}, "
                             f"{max_area_fraction}")
        self.n_segments, self.compactness, self.max_side = n_segments, float(compactness), int(max_side)
        self.min_area, self.max_area_fraction = float(min_area), float(max_area_fraction)
        self.dedup_iou, self.max_masks = float(dedup_iou), int(max_masks)

    def _small(self, image: np.ndarray) -> np.ndarray:
        scale = self.max_side / max(image.shape[:2])
        if scale >= 1:
            return image
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))

    def propose(self, image: np.ndarray, extra_label_map: np.ndarray | None = None) -> np.ndarray:
        """(M,H,W) bool candidate masks (extra label-map components first, then grouping order)."""
        image = _check_image(image)
        height, width = image.shape[:2]
        small = self._small(image)
        sh, sw = small.shape[:2]
        min_small = scaled_min_area(self.min_area, sh, sw)
        max_small = self.max_area_fraction * sh * sw
        candidates: list[np.ndarray] = []
        for n_segments in self.n_segments:
            superpixels = slic(small, n_segments=n_segments, compactness=self.compactness, start_label=0)
            for members in hierarchical_grouping(small, superpixels):
                lut = np.zeros(int(superpixels.max()) + 1, dtype=bool)
                lut[members] = True
                region = lut[superpixels]
                if min_small <= region.sum() <= max_small:
                    candidates.append(region)
        masks = np.stack(candidates) if candidates else np.zeros((0, sh, sw), dtype=bool)
        masks = deduplicate(masks, self.dedup_iou)[: self.max_masks]
        if (sh, sw) != (height, width):
            # nearest-neighbour upsampling of the low-resolution masks
            ys = np.minimum((np.arange(height) + 0.5) * sh / height, sh - 1).astype(int)
            xs = np.minimum((np.arange(width) + 0.5) * sw / width, sw - 1).astype(int)
            masks = masks[:, ys][:, :, xs]
        if extra_label_map is not None:
            if extra_label_map.shape != (height, width):
                raise ValueError(f"extra_label_map: expected shape {(height, width)}, got {extra_label_map.shape}")
            extra = label_map_components(extra_label_map, scaled_min_area(self.min_area, height, width))
            masks = np.concatenate([extra, masks])
        if len(masks) == 0:
            log.warning("no proposal passed the area filter; using the whole image")
            return np.ones((1, height, width), dtype=bool)
        return masks


class SamProposer:
    """Segment Anything automatic masks (TAS: ViT-H, 8 points per side, IoU/stability 0.7, 800 px).

    checkpoint: local SAM checkpoint file (e.g. sam_vit_h_4b8939.pth); model_type: 'vit_h'|'vit_l'|'vit_b'.
    """

    def __init__(self, checkpoint: str | Path, model_type: str = "vit_h", points_per_side: int = 8,
                 pred_iou_thresh: float = 0.7, stability_score_thresh: float = 0.7,
                 min_mask_region_area: int = 800, device: str = "cpu") -> None:
        try:
            from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
        except ImportError as err:
            raise RuntimeError("SamProposer: the package 'segment_anything' is not installed "
                               "(pip install segment-anything); use the superpixel proposer instead") from err
        path = Path(checkpoint)
        if not path.is_file():
            raise RuntimeError(f"SamProposer: SAM checkpoint file '{path}' not found; provide the {model_type} "
                               "checkpoint (e.g. sam_vit_h_4b8939.pth) at that path")
        if model_type not in sam_model_registry:
            raise ValueError(f"model_type: expected one of {list(sam_model_registry)}, got {model_type!r}")
        sam = sam_model_registry[model_type](checkpoint=str(path)).to(device)
        self.generator = SamAutomaticMaskGenerator(
            sam, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh, min_mask_region_area=min_mask_region_area)
        self.min_mask_region_area = int(min_mask_region_area)

    def propose(self, image: np.ndarray, extra_label_map: np.ndarray | None = None) -> np.ndarray:
        image = _check_image(image)
        masks = [m["segmentation"].astype(bool) for m in self.generator.generate(image)]
        if extra_label_map is not None:
            masks += list(label_map_components(extra_label_map, self.min_mask_region_area))
        if not masks:
            return np.ones((1, *image.shape[:2]), dtype=bool)
        return np.stack(masks)


def build_proposer(kind: str, **kwargs) -> SuperpixelProposer | SamProposer:
    """'superpixel' (default offline) or 'sam' (needs segment_anything and `checkpoint=`)."""
    if kind == "superpixel":
        return SuperpixelProposer(**kwargs)
    if kind == "sam":
        return SamProposer(**kwargs)
    raise ValueError(f"proposer kind: expected 'superpixel' or 'sam', got {kind!r}")
