"""The dataset abstraction every stage reads.

A layout (data/layouts/) turns a folder in its own format into a `Scan`: the class list, the ids of each role
(train, val, score), and for every id its image file, its mask (when it has one) and its image-level label (when
the layout gives one directly; otherwise it comes from the mask). `check_scan` then decodes every file and
collects every problem before anything is written; the prepare stage stores the result as a `PreparedDataset`
(data/prepared.py), which is all that later stages read about the data.

Roles: 'train' trains the CAM network, gets CAMs and pseudo-labels and trains the segmentation network; 'val'
scores the final model; 'score' is the subset of train ids (with masks) on which CAMs and pseudo-labels are
scored (the published protocol trains on VOC train_aug and scores on the 1,464 train images).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from .classes import IGNORE, ClassList

log = logging.getLogger(__name__)

ROLES = ("train", "val", "score")


class DataError(ValueError):
    """All problems found in a dataset, one per line, each naming the file and what is wrong."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} problem(s) in the data:\n  " + "\n  ".join(self.problems))


@dataclass
class Scan:
    """What a layout found, before any image is decoded.

    splits: role -> ids (in the layout's order); images: id -> image file; masks: id -> mask file (ids without a
    mask have none); mask_makers: id -> function returning the mask (masks rasterised from annotations, written
    by prepare); tags: id -> 0-based class indices given by the layout (ids without tags take them from their
    mask); sources: list and annotation files that define the dataset (hashed into the manifest).
    """

    layout: str
    root: Path
    classes: ClassList
    splits: dict[str, list[str]] = field(default_factory=dict)
    images: dict[str, Path] = field(default_factory=dict)
    masks: dict[str, Path] = field(default_factory=dict)
    mask_makers: dict[str, Callable[[], np.ndarray]] = field(default_factory=dict)
    tags: dict[str, list[int]] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def all_ids(self) -> list[str]:
        return list(dict.fromkeys(i for role in ROLES for i in self.splits.get(role, [])))

    def has_mask(self, image_id: str) -> bool:
        return image_id in self.masks or image_id in self.mask_makers


def duplicates(ids: Sequence[str]) -> list[str]:
    seen, twice = set(), []
    for i in ids:
        if i in seen and i not in twice:
            twice.append(i)
        seen.add(i)
    return twice


def check_image(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """Decodes the whole file (a truncated JPEG only fails on load): ((height, width), None) or (None, problem)."""
    if not path.is_file():
        return None, f"{path}: missing image"
    try:
        with Image.open(path) as im:
            im.load()
            return (im.height, im.width), None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return None, f"{path}: unreadable or truncated image ({err})"


def mask_facts(mask: np.ndarray) -> dict:
    """What the checks need to know of a mask: its size and the label values it holds."""
    return {"size": list(mask.shape), "values": np.unique(mask).tolist()}


def mask_problems(where: str, facts: dict, classes: ClassList, image_size: tuple[int, int] | None) -> list[str]:
    problems = []
    stray = sorted(set(facts["values"]) - classes.valid_mask_values())
    if stray:
        problems.append(f"{where}: mask values {stray[:10]} outside 0..{classes.num_labels - 1} (background and "
                        f"{classes.num_classes} classes) and {IGNORE}")
    h, w = facts["size"]
    if image_size is not None and (h, w) != tuple(image_size):
        problems.append(f"{where}: mask size {w}x{h} differs from image size {image_size[1]}x{image_size[0]}")
    return problems


def read_mask_facts(path: Path) -> tuple[dict | None, str | None]:
    """(facts, None) of a mask file, or (None, problem) when it is missing, unreadable or not label indices."""
    if not path.is_file():
        return None, f"{path}: missing mask"
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                return None, f"{path}: mask must be a palette or greyscale PNG of label indices, got mode {im.mode}"
            return mask_facts(np.asarray(im, dtype=np.uint8)), None
    except (OSError, SyntaxError, ValueError) as err:
        return None, f"{path}: unreadable or truncated mask ({err})"


@dataclass
class CheckedData:
    """The result of a clean check: the image-level label and the size (height, width) of every id."""

    labels: dict[str, list[int]]
    sizes: dict[str, tuple[int, int]]


def check_scan(scan: Scan, *, cache=None, on_mask: Callable[[str, np.ndarray], None] | None = None) -> CheckedData:
    """Decodes every image and mask of the scan; raises DataError listing every problem (the layout's own
    first). `cache`: an optional FileCache that remembers files already checked (same size and mtime);
    `on_mask(id, mask)`: receives each mask rasterised from annotations (prepare writes them to a temporary
    folder that only becomes its output when the whole check passed)."""
    problems = list(scan.problems)
    if "train" in scan.splits and not scan.splits["train"]:
        problems.append(f"{scan.root}: the train split lists no images")
    labels: dict[str, list[int]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for image_id in tqdm(scan.all_ids(), desc="checking images", unit="img", disable=None):
        path = scan.images.get(image_id)
        if path is None:
            problems.append(f"{scan.root}: id '{image_id}' has no image file")
            continue
        size, problem = cache.image(path, check_image) if cache is not None else check_image(path)
        if problem:
            problems.append(problem)
        else:
            sizes[image_id] = size
        facts, where = None, ""
        if image_id in scan.masks:
            where = str(scan.masks[image_id])
            facts, problem = (cache.mask(scan.masks[image_id], read_mask_facts) if cache is not None
                              else read_mask_facts(scan.masks[image_id]))
            if problem:
                problems.append(problem)
        elif image_id in scan.mask_makers:
            where = f"{scan.root}: annotations of '{image_id}'"
            try:
                mask = scan.mask_makers[image_id]()
            except Exception as err:  # a malformed annotation: name the id, keep checking the others
                problems.append(f"{where}: cannot rasterise them ({err})")
            else:
                facts = mask_facts(mask)
                if on_mask is not None and not mask_problems(where, facts, scan.classes, size):
                    on_mask(image_id, mask)
        mask_labels = None
        if facts is not None:
            bad = mask_problems(where, facts, scan.classes, size)
            problems += bad
            if not bad:
                mask_labels = [int(v) - 1 for v in facts["values"] if 1 <= v <= scan.classes.num_classes]
        if image_id in scan.tags:
            labels[image_id] = list(scan.tags[image_id])
        elif mask_labels is not None:
            labels[image_id] = mask_labels
        elif not scan.has_mask(image_id):
            problems.append(f"{scan.root}: id '{image_id}' has neither image-level tags nor a mask to take them from")
    if problems:
        raise DataError(problems)
    return CheckedData(labels, sizes)

