"""voc-mini for the benchmarks, found and read as the pipeline finds and reads it.

The default root is params' data.root default (../shared/voc-mini) taken from this repository, wherever the clone
lies; the images, masks and split lists come through the library's voc layout (textwsss.data.layouts).
"""
from __future__ import annotations

from pathlib import Path

from textwsss.data.classes import VOC
from textwsss.data.images import read_mask
from textwsss.data.layouts import scan
from textwsss.data.prepared import PreparedDataset
from textwsss.params import DataParams

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = (REPO / DataParams().root).resolve()
#: printed when the data is absent; tests/test_scripts.py skips (instead of failing) on it
MISSING = "voc-mini not found"


def voc_root(root: Path | str | None) -> Path:
    """The data root to benchmark on (--root, default ../shared/voc-mini beside the repository); exits with a
    message naming the folder and the option when it is absent."""
    path = Path(root) if root is not None else DEFAULT_ROOT
    if not (path / "JPEGImages").is_dir():
        raise SystemExit(f"--root: {MISSING} at {path} (expected a VOC-layout folder with JPEGImages/, "
                         f"SegmentationClass/ and ImageSets/Segmentation/; voc-mini lies at ../shared/voc-mini "
                         f"beside the repository, or pass --root)")
    return path


def voc_subset(root: Path, split: str, n: int = 0, *, with_objects: bool = False) -> PreparedDataset:
    """The first n ids of a split (0: all; with_objects: only ids whose mask holds an object class) as the stages
    see a dataset, image-level labels taken from the masks as prepare takes them. Only those masks are decoded."""
    found = scan(DataParams(root=str(root), train_split=split), root, roles=("train",))
    if found.problems:
        raise SystemExit(f"--root {root}: " + "; ".join(found.problems))
    ids, labels = [], {}
    for image_id in found.splits["train"]:
        classes = VOC.labels_of_mask(read_mask(found.masks[image_id]))
        if with_objects and not classes:
            continue
        ids.append(image_id)
        labels[image_id] = classes
        if len(ids) == n:
            break
    if n < 0 or len(ids) < n or not ids:
        what = "images with objects" if with_objects else "images"
        raise SystemExit(f"--n: {root} split '{split}' has {len(ids)} {what}, asked for {n} "
                         f"(expected 0 for all, or 1..{len(ids)})")
    rel = {i: found.images[i].relative_to(root).as_posix() for i in ids}
    masks = {i: found.masks[i].relative_to(root).as_posix() for i in ids}
    return PreparedDataset(layout="voc", root=root, folder=root, classes=VOC, splits={"train": ids}, images=rel,
                           masks=masks, labels=labels)
