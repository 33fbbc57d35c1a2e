"""Your own images with image-level tags: the reason weak supervision exists.

    <root>/images/<file>            any image files (sub-folders allowed); data.images renames the folder
    <root>/tags.csv                 columns: image (path below images/), tags (class names separated by ';' or
                                    '|'), optionally split (the value of data.train_split or data.val_split;
                                    without the column every image is a train image)
      or <root>/tags.json           [{"image": ..., "tags": [...], "split": ...}, ...] or {"<image>": [...]}
    <root>/classes.txt              the class names, one per line (or data.classes as a list)
    <root>/masks/<id>.png           optional label PNGs (0 background, k + 1 for the k-th class, 255 ignore),
                                    only used for scoring; any subset of the images may have one

Ids are image paths below images/ without their suffix. Prompts come from the class names ('_' read as a
space) or data.prompts, so a new class set needs no code.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from ..classes import ClassList
from ..dataset import Scan

SEPARATORS = re.compile(r"[;|]")


def _classes(root: Path, data, problems: list[str]) -> ClassList | None:
    if isinstance(data.classes, list):
        return ClassList.of(data.classes, data.prompts)
    if isinstance(data.classes, str):
        return ClassList.preset(data.classes, data.prompts)
    path = root / "classes.txt"
    if not path.is_file():
        problems.append(f"{path}: no class list; write the class names there, one per line, or set data.classes")
        return None
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    try:
        return ClassList.of(names, data.prompts)
    except ValueError as err:
        problems.append(f"{path}: {err}")
        return None


def _rows(path: Path, problems: list[str]) -> list[tuple[str, str, list[str], str | None]]:
    """(where, image, tags, split) per entry of the tags file."""
    rows = []
    if path.suffix.lower() == ".json":
        try:
            content = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            problems.append(f"{path}: not readable JSON ({err})")
            return []
        if isinstance(content, dict):
            content = [{"image": k, "tags": v} for k, v in content.items()]
        for n, entry in enumerate(content):
            where = f"{path} entry {n}"
            if not isinstance(entry, dict) or "image" not in entry or not isinstance(entry.get("tags", []), list):
                problems.append(f"{where}: expected {{'image': ..., 'tags': [...]}}, got {entry!r:.80}")
                continue
            rows.append((where, str(entry["image"]), [str(t) for t in entry.get("tags", [])], entry.get("split")))
        return rows
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            if "image" not in header or "tags" not in header:
                problems.append(f"{path}: expected a header with columns 'image' and 'tags' (and optionally "
                                f"'split'), got {header}")
                return []
            for n, row in enumerate(reader, start=2):
                tags = [t.strip() for t in SEPARATORS.split(row.get("tags") or "") if t.strip()]
                rows.append((f"{path}:{n}", (row.get("image") or "").strip(), tags,
                             (row.get("split") or "").strip() or None if "split" in header else None))
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        problems.append(f"{path}: not a readable CSV file ({err})")
    return rows


def scan_tags(root: Path, data, roles=("train", "val")) -> Scan:
    problems: list[str] = []
    if not root.is_dir():
        problems.append(f"{root}: data root not found (params data.root)")
    classes = _classes(root, data, problems) if root.is_dir() else None
    scan = Scan("tags", root, classes or ClassList(("unknown",), ("unknown",)), problems=problems)
    if classes is None:
        return scan
    if (root / "classes.txt").is_file() and not isinstance(data.classes, list):
        scan.sources.append(root / "classes.txt")
    tags_path = root / (data.labels or "tags.csv")
    if not tags_path.is_file():
        alternative = root / "tags.json"
        if not data.labels and alternative.is_file():
            tags_path = alternative
        else:
            scan.problems.append(f"{tags_path}: tags file not found (params data.labels: a .csv or .json file)")
            return scan
    scan.sources.append(tags_path)
    images_dir = root / (data.images or "images")
    masks_dir = root / (data.masks or "masks")
    by_name = {}
    for i, (n, p) in enumerate(zip(classes.names, classes.prompts)):
        by_name[n.lower()] = i
        by_name[p.lower()] = i
    split_of = {data.train_split: "train", data.val_split: "val"}
    first_row: dict[str, str] = {}
    scan.splits = {role: [] for role in ("train", "val") if role in roles}
    for where, image, tags, split in _rows(tags_path, scan.problems):
        if not image:
            scan.problems.append(f"{where}: empty image name")
            continue
        image_id = str(Path(image).with_suffix("")).replace("\\", "/")
        if image_id in first_row:
            scan.problems.append(f"{where}: image '{image}' listed twice (first at {first_row[image_id]})")
            continue
        first_row[image_id] = where
        unknown = [t for t in tags if t.lower() not in by_name]
        if unknown:
            scan.problems.append(f"{where}: tags {unknown} name no class of the class list {list(classes.names)}")
            continue
        role = "train" if split is None else split_of.get(split)
        if role is None:
            scan.problems.append(f"{where}: split '{split}' is neither data.train_split '{data.train_split}' nor "
                                 f"data.val_split '{data.val_split}'")
            continue
        if role not in scan.splits:
            continue
        scan.splits[role].append(image_id)
        scan.images[image_id] = images_dir / image
        scan.tags[image_id] = sorted({by_name[t.lower()] for t in tags})
        mask = masks_dir / f"{image_id}.png"
        if mask.is_file():
            scan.masks[image_id] = mask
    if data.score_split:
        scan.problems.append("data.score_split: the tags layout scores every train image that has a mask; "
                             "leave it empty")
    return scan
