"""PASCAL VOC 2012, and VOC with SBD's train_aug.

    <root>/JPEGImages/<id>.jpg
    <root>/SegmentationClass/<id>.png            voc: masks (labels 0..20, 255)
    <root>/SegmentationClassAug/<id>.png         voc_aug: the 10,582 train_aug masks (+ val)
    <root>/ImageSets/Segmentation/<split>.txt    one id per line (deeplab-style lines '/JPEGImages/x.jpg /...png'
                                                 are read too)
    <root>/cls_labels.npy                        optional (data.labels): IRN's image-level labels, a pickled dict
                                                 {id: 20-vector}; ids may be strings or IRN's integers (2007000032)

Image-level labels come from `data.labels` when given, else from each id's mask. voc_aug is the published
protocol: train the CAMs on train_aug, score CAMs and pseudo-labels on the 1,464 train ids (data.score_split).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..classes import ClassList
from ..dataset import Scan, duplicates

DEFAULT_MASKS = {"voc": "SegmentationClass", "voc_aug": "SegmentationClassAug"}


def split_file(root: Path, split: str) -> Path:
    return Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"


def read_split_file(path: Path) -> list[str]:
    """Ids of a split list; a line may also be deeplab's '/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png'."""
    ids = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            ids.append(Path(line.split()[0]).stem if "/" in line or " " in line else line)
    return ids


def voc_classes(data) -> ClassList:
    if data.classes is None or data.classes == "voc":
        return ClassList.preset("voc", data.prompts)
    if isinstance(data.classes, str):
        return ClassList.preset(data.classes, data.prompts)
    return ClassList.of(data.classes, data.prompts)


def read_cls_labels(path: Path, classes: ClassList, problems: list[str]) -> dict[str, list[int]]:
    """IRN's cls_labels.npy: {id: multi-hot vector of the object classes}."""
    try:
        raw = np.load(path, allow_pickle=True).item()
    except (OSError, ValueError, AttributeError, pickle.UnpicklingError) as err:  # numpy raises the last for a
        # file that is neither .npy nor a pickle (a failed copy, an HTML error page saved under the name)
        problems.append(f"{path}: not a pickled dict of image-level labels ({err})")
        return {}
    labels = {}
    for key, vector in raw.items():
        vector = np.asarray(vector).reshape(-1)
        image_id = str(key)
        if isinstance(key, (int, np.integer)) and len(image_id) == 10:  # IRN: 2007000032 -> 2007_000032
            image_id = f"{image_id[:4]}_{image_id[4:]}"
        if vector.shape[0] != classes.num_classes:
            problems.append(f"{path}: labels of '{image_id}' have {vector.shape[0]} entries, expected "
                            f"{classes.num_classes} (one per class)")
            continue
        labels[image_id] = [int(k) for k in np.flatnonzero(vector > 0.5)]
    return labels


def scan_voc(root: Path, data, roles=("train", "val")) -> Scan:
    classes = voc_classes(data)
    scan = Scan(data.layout, root, classes)
    if not root.is_dir():
        scan.problems.append(f"{root}: data root not found (params data.root)")
        return scan
    images = root / (data.images or "JPEGImages")
    masks = root / (data.masks or DEFAULT_MASKS[data.layout])
    splits = {"train": data.train_split, "val": data.val_split}
    if data.score_split:
        splits["score"] = data.score_split
    wanted = set(roles) | ({"score"} if "train" in roles else set())
    for role, split in splits.items():
        if role not in wanted:
            continue
        path = split_file(root, split)
        if not path.is_file():
            scan.problems.append(f"{path}: split list '{split}' not found (params data.{role}_split)")
            continue
        scan.sources.append(path)
        ids = read_split_file(path)
        twice = duplicates(ids)
        if twice:
            scan.problems.append(f"{path}: ids listed twice: {twice[:10]}")
        scan.splits[role] = list(dict.fromkeys(ids))
    if "score" in scan.splits:
        outside = [i for i in scan.splits["score"] if i not in set(scan.splits.get("train", []))]
        if outside:
            scan.problems.append(f"{split_file(root, data.score_split)}: {len(outside)} score id(s) not in the train "
                                 f"split '{data.train_split}': {outside[:10]}")
    both = sorted(set(scan.splits.get("train", [])) & set(scan.splits.get("val", [])))
    if both:
        scan.problems.append(f"{root}/ImageSets/Segmentation: {len(both)} id(s) in both '{data.train_split}' and "
                             f"'{data.val_split}', which must not overlap: {both[:10]}")
    tags = None
    if data.labels:
        labels_path = root / data.labels
        if labels_path.is_file():
            scan.sources.append(labels_path)
            tags = read_cls_labels(labels_path, classes, scan.problems)
        else:
            scan.problems.append(f"{labels_path}: image-level labels file not found (params data.labels)")
    for image_id in scan.all_ids():
        scan.images[image_id] = images / f"{image_id}.jpg"
        mask = masks / f"{image_id}.png"
        if tags is None or mask.is_file():
            scan.masks[image_id] = mask  # without a labels file every id needs its mask (missing ones are named)
        if tags is not None:
            if image_id in tags:
                scan.tags[image_id] = tags[image_id]
            elif image_id in scan.splits.get("train", []):
                scan.problems.append(f"{root / data.labels}: no image-level labels for train id '{image_id}'")
    return scan
