"""The prepare stage's library: validate a VOC root and derive image-level labels.

Every listed id is checked before anything is written, and all problems are reported together,
each naming the file and what is wrong, so a user fixes a broken data set in one pass.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from .io import atomic_path, write_json, write_text
from .voc import CLASS_NAMES, IGNORE, NUM_CLASSES, image_path, labels_of_mask, mask_path, read_split

log = logging.getLogger(__name__)
VALID_MASK_VALUES = set(range(NUM_CLASSES + 1)) | {IGNORE}


class DataError(ValueError):
    """All problems found in a data root, one per line."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} problem(s) in the data:\n  " + "\n  ".join(self.problems))


@dataclass(frozen=True)
class PreparedData:
    splits: dict[str, list[str]]
    labels: dict[str, list[int]]  # id -> 0-based indices into CLASS_NAMES


def _load(path: Path, kind: str) -> tuple[np.ndarray | None, tuple[int, int] | None, str | None]:
    """Decodes a file fully (a truncated JPEG only fails on load), returning (array, (w, h), problem)."""
    if not path.is_file():
        return None, None, f"{path}: missing {kind}"
    try:
        with Image.open(path) as im:
            im.load()
            if kind == "mask" and im.mode not in ("P", "L"):
                return None, None, f"{path}: mask must be a palette or greyscale PNG of label indices, got mode {im.mode}"
            arr = np.asarray(im) if kind == "mask" else None
            return arr, im.size, None
    except (OSError, SyntaxError, ValueError) as err:
        return None, None, f"{path}: unreadable or truncated {kind} ({err})"


def check_image_pair(root: Path, image_id: str) -> tuple[list[int] | None, list[str]]:
    """Checks one id; returns its image-level label (or None) and the problems found."""
    problems = []
    _, image_size, problem = _load(image_path(root, image_id), "image")
    if problem:
        problems.append(problem)
    mask, mask_size, problem = _load(mask_path(root, image_id), "mask")
    if problem:
        problems.append(problem)
    if mask is None:
        return None, problems
    stray = sorted(set(np.unique(mask).tolist()) - VALID_MASK_VALUES)
    if stray:
        problems.append(f"{mask_path(root, image_id)}: mask values {stray} outside 0..{NUM_CLASSES} and {IGNORE}")
    if image_size is not None and mask_size != image_size:
        problems.append(f"{mask_path(root, image_id)}: mask size {mask_size[0]}x{mask_size[1]} differs from image "
                        f"size {image_size[0]}x{image_size[1]} ({image_path(root, image_id)})")
    return (labels_of_mask(mask) if not problems else None), problems


def validate_root(root: Path, splits: Sequence[str], disjoint: Sequence[tuple[str, str]] = ()) -> PreparedData:
    """Reads the split lists and checks every listed id; raises DataError listing every problem."""
    root = Path(root)
    problems: list[str] = []
    if not root.is_dir():
        raise DataError([f"{root}: data root not found (params data.root)"])
    ids_of: dict[str, list[str]] = {}
    for split in splits:
        try:
            ids = read_split(root, split)
        except FileNotFoundError as err:
            problems.append(str(err))
            continue
        if not ids:
            problems.append(f"{root}/ImageSets/Segmentation/{split}.txt: split '{split}' lists no ids")
        dupes = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
        if dupes:
            problems.append(f"{root}/ImageSets/Segmentation/{split}.txt: ids listed twice: {dupes[:10]}")
        ids_of[split] = list(dict.fromkeys(ids))
    for a, b in disjoint:
        both = sorted(set(ids_of.get(a, [])) & set(ids_of.get(b, [])))
        if both:
            problems.append(f"{root}/ImageSets/Segmentation: {len(both)} id(s) in both '{a}' and '{b}', which must not "
                            f"overlap: {both[:10]}")
    labels: dict[str, list[int]] = {}
    all_ids = list(dict.fromkeys(i for ids in ids_of.values() for i in ids))
    for image_id in tqdm(all_ids, desc="checking images", unit="img", disable=None):
        label, found = check_image_pair(root, image_id)
        problems.extend(found)
        if label is not None:
            labels[image_id] = label
    if problems:
        raise DataError(problems)
    return PreparedData(ids_of, labels)


def write_prepared(out_dir: Path, data: PreparedData) -> None:
    out_dir = Path(out_dir)
    for split, ids in data.splits.items():
        write_text(out_dir / f"{split}.txt", "\n".join(ids) + "\n")
    write_json(out_dir / "labels.json", {
        "class_names": list(CLASS_NAMES),
        "note": "image-level labels: 0-based indices into class_names of the object classes in each mask",
        "labels": data.labels,
    })


def read_prepared(prepared_dir: Path, split: str) -> tuple[list[str], dict[str, list[int]]]:
    """The ids of a split and the image-level labels written by the prepare stage."""
    prepared_dir = Path(prepared_dir)
    split_file = prepared_dir / f"{split}.txt"
    labels_file = prepared_dir / "labels.json"
    for f in (split_file, labels_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not found; run the prepare stage first (dvc repro prepare)")
    ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    labels = json.loads(labels_file.read_text())["labels"]
    return ids, {i: labels[i] for i in ids}
