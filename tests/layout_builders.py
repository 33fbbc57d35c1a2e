"""Tiny datasets in every layout, built from voc-mini's real images, for the layout and whole-DAG tests."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from skimage.measure import find_contours, label as connected_components

from textwsss.data.classes import COCO_NAMES, VOC_NAMES
from vocmini import image_path, mask_path, read_mask, read_split

#: COCO's category ids: 1..90 with the ten gaps of the real files, so the id -> label mapping is exercised.
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
VOC_TO_COCO = {"aeroplane": "airplane", "diningtable": "dining table", "motorbike": "motorcycle", "pottedplant":
               "potted plant", "sofa": "couch", "tvmonitor": "tv"}


def pick(voc_mini: Path, split: str, n: int, classes: tuple[str, ...] | None = None) -> list[str]:
    """The first n ids of a voc-mini split (with one of `classes` in the mask, when given)."""
    ids = []
    for i in read_split(voc_mini, split):
        present = {VOC_NAMES[v - 1] for v in np.unique(read_mask(mask_path(voc_mini, i))) if 0 < v < 255}
        if classes is None or present & set(classes):
            ids.append(i)
        if len(ids) == n:
            break
    return ids


def voc_aug_root(voc_mini: Path, root: Path, train: int = 8, score: int = 4, val: int = 4) -> Path:
    """JPEGImages, SegmentationClassAug (no SegmentationClass), train_aug / train / val lists."""
    train_ids, val_ids = pick(voc_mini, "train", train), pick(voc_mini, "val", val)
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for i in train_ids + val_ids:
        shutil.copy(image_path(voc_mini, i), root / "JPEGImages")
        shutil.copy(mask_path(voc_mini, i), root / "SegmentationClassAug")
    lists = root / "ImageSets" / "Segmentation"
    # deeplab-style lines in train_aug, plain ids elsewhere: both are read
    (lists / "train_aug.txt").write_text("".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n"
                                                 for i in train_ids))
    (lists / "train.txt").write_text("\n".join(train_ids[:score]) + "\n")
    (lists / "val.txt").write_text("\n".join(val_ids) + "\n")
    return root


def polygons(component: np.ndarray) -> list[list[float]]:
    """COCO polygons [x1, y1, x2, y2, ...] of the outlines of a binary component."""
    padded = np.pad(component.astype(np.uint8), 1)
    out = []
    for contour in find_contours(padded, 0.5):
        if len(contour) >= 3:
            out.append([float(v) for y, x in contour - 1 for v in (x, y)])
    return out


def coco_root(voc_mini: Path, root: Path, train: int = 8, val: int = 4) -> Path:
    """train2014/, val2014/ with COCO file names and annotations/instances_*.json of polygons traced from the
    voc-mini masks (VOC classes under their COCO names and ids)."""
    categories = [{"id": cid, "name": name, "supercategory": "thing"} for cid, name in zip(COCO_IDS, COCO_NAMES)]
    cat_id = {name: cid for cid, name in zip(COCO_IDS, COCO_NAMES)}
    (root / "annotations").mkdir(parents=True)
    ann_id = 1
    for split, ids in (("train2014", pick(voc_mini, "train", train)), ("val2014", pick(voc_mini, "val", val))):
        (root / split).mkdir()
        images, annotations = [], []
        for n, i in enumerate(ids):
            image_id = 1000 + n
            file_name = f"COCO_{split}_{image_id:012d}.jpg"
            shutil.copy(image_path(voc_mini, i), root / split / file_name)
            mask = read_mask(mask_path(voc_mini, i))
            images.append({"id": image_id, "file_name": file_name, "height": mask.shape[0], "width": mask.shape[1]})
            for v in np.unique(mask):
                if not 0 < v < 255:
                    continue
                voc = VOC_NAMES[v - 1]
                comps = connected_components(mask == v)
                for c in range(1, comps.max() + 1):
                    part = comps == c
                    if part.sum() < 30:
                        continue
                    rows, cols = np.nonzero(part)
                    annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat_id[VOC_TO_COCO.get(voc, voc)],
                                        "segmentation": polygons(part), "area": float(part.sum()), "iscrowd": 0,
                                        "bbox": [float(cols.min()), float(rows.min()), float(np.ptp(cols) + 1),
                                                 float(np.ptp(rows) + 1)]})
                    ann_id += 1
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": categories}))
    return root


#: The tags dataset: three classes that are not VOC classes, tagged on voc-mini images of dogs, cats and horses.
TAG_CLASSES = {"canine": "dog", "feline": "cat", "equine": "horse"}


def tags_root(voc_mini: Path, root: Path, train: int = 8, val: int = 4) -> Path:
    """images/ (in two sub-folders), tags.csv with a split column, classes.txt; no masks."""
    by_voc = {v: k for k, v in TAG_CLASSES.items()}
    rows = []
    for split, n in (("train", train), ("val", val)):
        for i in pick(voc_mini, split, n, tuple(TAG_CLASSES.values())):
            present = {VOC_NAMES[v - 1] for v in np.unique(read_mask(mask_path(voc_mini, i))) if 0 < v < 255}
            tags = sorted(by_voc[c] for c in present if c in by_voc)
            folder = root / "images" / ("a" if len(rows) % 2 else "b")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(image_path(voc_mini, i), folder / f"{i}.jpg")
            rows.append({"image": f"{folder.name}/{i}.jpg", "tags": ";".join(tags), "split": split})
    with open(root / "tags.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "tags", "split"])
        writer.writeheader()
        writer.writerows(rows)
    (root / "classes.txt").write_text("\n".join(TAG_CLASSES) + "\n")
    return root
