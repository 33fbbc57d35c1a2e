"""The folder formats the pipeline reads, one module each; `scan(params.data)` dispatches on `data.layout`.

- voc:     PASCAL VOC 2012 segmentation layout (JPEGImages, SegmentationClass, ImageSets/Segmentation)
- voc_aug: VOC with SBD's train_aug (SegmentationClassAug, and optionally IRN's cls_labels.npy)
- coco:    MS COCO 2014 (train2014/, val2014/, annotations/instances_*.json; masks rasterised or pre-converted)
- tags:    a folder of images with a CSV or JSON of image-level tags, own class names, masks optional
"""
from __future__ import annotations

from pathlib import Path

from ..dataset import Scan

LAYOUTS = ("voc", "voc_aug", "coco", "tags")


def scan(data, root: Path | None = None, roles: tuple[str, ...] = ("train", "val")) -> Scan:
    """The Scan of the dataset described by params `data` (root: the resolved data root); `roles`: which splits
    to read ('train' brings its 'score' subset; ('val',) alone serves `textwsss evaluate`)."""
    root = Path(root) if root is not None else data.root_path()
    if data.layout in ("voc", "voc_aug"):
        from .voc import scan_voc

        return scan_voc(root, data, roles)
    if data.layout == "coco":
        from .coco import scan_coco

        return scan_coco(root, data, roles)
    if data.layout == "tags":
        from .tags import scan_tags

        return scan_tags(root, data, roles)
    raise ValueError(f"data.layout: expected one of {LAYOUTS}, got {data.layout!r}")
