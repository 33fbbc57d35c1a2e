"""The prepared dataset: what the prepare stage writes and every later stage reads.

    data/prepared/dataset.json   layout, class list, ids per role (train / val / score), per id its image and
                                 mask (paths relative to the data root, or to this folder for rasterised masks)
                                 and image-level label, and the content hash of every file the dataset uses
    data/prepared/masks/         masks rasterised from annotations (coco without pre-converted PNGs)

Nothing in it depends on where the data root lies (paths are relative, hashes are of content), so the same
data gives the same file on every machine and in every `dvc exp` workspace; the data root itself comes from
params (`data.root`) when a stage runs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .classes import ClassList
from .images import read_image, read_mask

FORMAT = "textwsss-prepared-1"
PREPARED_MASKS = "prepared:"  # mask paths with this prefix lie in the prepared folder


@dataclass
class PreparedDataset:
    """The dataset as the stages see it. `root`: the data root; `folder`: the prepared folder."""

    layout: str
    root: Path
    folder: Path
    classes: ClassList
    splits: dict[str, list[str]]
    images: dict[str, str]
    masks: dict[str, str]
    labels: dict[str, list[int]]

    def ids(self, role: str) -> list[str]:
        """Ids of a role: 'train', 'val' or 'score' (the train ids on which CAMs and pseudo-labels are scored)."""
        if role not in self.splits:
            raise KeyError(f"role {role!r}: expected one of {sorted(self.splits)}")
        return list(self.splits[role])

    def image_path(self, image_id: str) -> Path:
        return self.root / self.images[image_id]

    def has_mask(self, image_id: str) -> bool:
        return image_id in self.masks

    def mask_path(self, image_id: str) -> Path:
        rel = self.masks.get(image_id)
        if rel is None:
            raise KeyError(f"'{image_id}' has no mask")
        if rel.startswith(PREPARED_MASKS):
            return self.folder / rel[len(PREPARED_MASKS):]
        return self.root / rel

    def with_masks(self, ids: Sequence[str]) -> list[str]:
        return [i for i in ids if i in self.masks]

    def read_image(self, image_id: str) -> np.ndarray:
        return read_image(self.image_path(image_id))

    def read_mask(self, image_id: str) -> np.ndarray:
        return read_mask(self.mask_path(image_id))

    def label_vector(self, image_id: str) -> np.ndarray:
        y = np.zeros(self.classes.num_classes, dtype=np.float32)
        y[self.labels[image_id]] = 1
        return y

    def describe_scoring(self, role: str, scored: Sequence[str]) -> str:
        n = len(self.ids(role))
        return f"{len(scored)} of the {n} {role} images have a mask and are scored"


def read_prepared(folder: str | Path, root: str | Path) -> PreparedDataset:
    """The prepared dataset in `folder` (data/prepared), its files found under the data root `root`."""
    folder = Path(folder)
    path = folder / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run the prepare stage first (dvc repro prepare)")
    content = json.loads(path.read_text())
    if content.get("format") != FORMAT:
        raise ValueError(f"{path}: written by another version of prepare (expected format {FORMAT!r}); "
                         f"run `dvc repro prepare`")
    return PreparedDataset(layout=content["layout"], root=Path(root), folder=folder,
                           classes=ClassList.from_json(content["classes"]), splits=content["splits"],
                           images=content["images"], masks=content["masks"], labels=content["labels"])


def prepared_content(layout: str, root: Path, classes: ClassList, splits: dict[str, list[str]],
                     images: dict[str, Path], masks: dict[str, str], labels: dict[str, list[int]],
                     manifest: dict[str, str]) -> dict:
    """dataset.json's content; paths under the data root are stored relative to it."""
    def rel(p: Path) -> str:
        return Path(p).relative_to(root).as_posix()

    ids = list(dict.fromkeys(i for s in splits.values() for i in s))
    return {
        "format": FORMAT,
        "layout": layout,
        "classes": classes.to_json(),
        "note": "labels: 0-based indices into classes.names of the object classes in each image",
        "splits": splits,
        "images": {i: rel(images[i]) for i in ids},
        "masks": {i: masks[i] for i in ids if i in masks},
        "labels": {i: labels[i] for i in ids},
        "manifest": dict(sorted(manifest.items())),
    }
