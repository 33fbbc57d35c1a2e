"""MS COCO (2014 by default; any COCO-format instances JSON works).

    <root>/<split>/<file_name>                        images, e.g. train2014/COCO_train2014_000000000009.jpg
    <root>/annotations/instances_<split>.json         categories, images, instance annotations (polygons or RLE)
    <root>/<data.masks>/<id>.png                      optional pre-converted label PNGs (0 background, 1..80 in
                                                      category-id order, 255 ignore); without them (data.masks
                                                      '') prepare rasterises the annotations with pycocotools

Ids are the image file names without their suffix. Image-level labels are the categories of an image's
annotations (crowd regions included). In rasterised masks every instance is painted with its class, the
larger ones first, so a small object on a large one stays visible; crowd regions too, as the pre-converted
PNGs in common use do. The class list is the JSON's categories in id order unless data.classes names it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..classes import ClassList
from ..dataset import Scan, duplicates


def annotations_file(root: Path, split: str) -> Path:
    return Path(root) / "annotations" / f"instances_{split}.json"


def _classes(data, categories: list[dict], source: Path, problems: list[str]) -> ClassList:
    names = [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    if data.classes is None:
        return ClassList.of(names, data.prompts)
    classes = ClassList.preset(data.classes, data.prompts) if isinstance(data.classes, str) \
        else ClassList.of(data.classes, data.prompts)
    unknown = [n for n in names if n not in classes.names]
    if unknown:
        problems.append(f"{source}: categories {unknown[:10]} are not in the class list data.classes")
    return classes


def _rasteriser(size: tuple[int, int], anns: list[dict], label_of: dict[int, int]):
    def rasterise() -> np.ndarray:
        from pycocotools import mask as mask_utils

        h, w = size
        mask = np.zeros((h, w), dtype=np.uint8)
        for ann in sorted(anns, key=lambda a: -float(a.get("area", 0.0))):
            seg = ann["segmentation"]
            if isinstance(seg, list):  # polygons
                rles = mask_utils.frPyObjects(seg, h, w)
                rle = mask_utils.merge(rles)
            elif isinstance(seg.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = seg
            mask[mask_utils.decode(rle).astype(bool)] = label_of[ann["category_id"]]
        return mask
    return rasterise


def scan_coco(root: Path, data, roles=("train", "val")) -> Scan:
    problems: list[str] = []
    loaded: dict[str, dict] = {}
    if not root.is_dir():
        problems.append(f"{root}: data root not found (params data.root)")
    else:
        for role, split in (("train", data.train_split), ("val", data.val_split)):
            if role not in roles:
                continue
            path = annotations_file(root, split)
            if not path.is_file():
                problems.append(f"{path}: instances JSON of split '{split}' not found (params data.{role}_split)")
                continue
            try:
                loaded[role] = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                problems.append(f"{path}: not readable JSON ({err})")
                continue
            missing = [k for k in ("images", "annotations", "categories") if k not in loaded[role]]
            if missing:
                problems.append(f"{path}: missing keys {missing} of a COCO instances file")
                del loaded[role]
    categories = next((d["categories"] for d in loaded.values()), [])
    source = annotations_file(root, data.train_split if "train" in loaded else data.val_split)
    classes = _classes(data, categories, source, problems) if categories else ClassList.preset("coco", data.prompts)
    scan = Scan("coco", root, classes, problems=problems)
    if data.score_split:
        scan.problems.append("data.score_split: the coco layout scores every train image that has annotations; "
                             "leave it empty")
    for role, content in loaded.items():
        split = data.train_split if role == "train" else data.val_split
        path = annotations_file(root, split)
        scan.sources.append(path)
        label_of = {}
        for c in content["categories"]:
            if c["name"] in classes.names:
                label_of[c["id"]] = classes.names.index(c["name"]) + 1
        anns_of: dict[int, list[dict]] = {}
        for ann in content["annotations"]:
            if ann.get("category_id") not in label_of:
                scan.problems.append(f"{path}: annotation {ann.get('id')} has unknown category_id "
                                     f"{ann.get('category_id')}")
                continue
            anns_of.setdefault(ann["image_id"], []).append(ann)
        known = {im["id"] for im in content["images"]}
        stray = sorted({a for a in anns_of if a not in known})
        if stray:
            scan.problems.append(f"{path}: annotations refer to image ids {stray[:10]} that the file does not list")
        ids = [Path(im["file_name"]).stem for im in content["images"]]
        twice = duplicates(ids)
        if twice:
            scan.problems.append(f"{path}: images listed twice: {twice[:10]}")
        scan.splits[role] = list(dict.fromkeys(ids))
        images_dir = root / (data.images or split)
        for im in content["images"]:
            image_id = Path(im["file_name"]).stem
            scan.images[image_id] = images_dir / im["file_name"]
            anns = anns_of.get(im["id"], [])
            scan.tags[image_id] = sorted({label_of[a["category_id"]] - 1 for a in anns})
            if data.masks:
                scan.masks[image_id] = root / data.masks / f"{image_id}.png"
            else:
                scan.mask_makers[image_id] = _rasteriser((int(im["height"]), int(im["width"])), anns, label_of)
    both = sorted(set(scan.splits.get("train", [])) & set(scan.splits.get("val", [])))
    if both:
        scan.problems.append(f"{root}/annotations: {len(both)} image(s) in both '{data.train_split}' and "
                             f"'{data.val_split}': {both[:10]}")
    return scan
