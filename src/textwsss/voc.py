"""PASCAL VOC conventions: class names, palette, image and mask reading.

One place for the facts every stage shares: the 21-class order (background first), the
ignore value 255 and the colour palette of VOC label PNGs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

BACKGROUND = "background"
#: The 20 object classes, in the official VOC order (index k here is label k + 1 in a mask).
CLASS_NAMES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
#: The 21 labels of a segmentation mask: background then the object classes.
LABEL_NAMES: tuple[str, ...] = (BACKGROUND, *CLASS_NAMES)
NUM_CLASSES = len(CLASS_NAMES)  # 20 object classes
NUM_LABELS = len(LABEL_NAMES)  # 21 with background
IGNORE = 255

#: Readable prompts for the class names VOC spells as one word.
READABLE_NAMES: dict[str, str] = {
    "diningtable": "dining table",
    "pottedplant": "potted plant",
    "tvmonitor": "tv monitor",
    "aeroplane": "aeroplane",
    "motorbike": "motorbike",
}


def readable(name: str) -> str:
    return READABLE_NAMES.get(name, name)


def voc_palette() -> np.ndarray:
    """The standard VOC colour map as a (256, 3) uint8 array (bit-interleaved label colours)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        r = g = b = 0
        c = label
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[label] = (r, g, b)
    return palette


PALETTE = voc_palette()


def image_path(root: Path, image_id: str) -> Path:
    return Path(root) / "JPEGImages" / f"{image_id}.jpg"


def mask_path(root: Path, image_id: str) -> Path:
    return Path(root) / "SegmentationClass" / f"{image_id}.png"


def split_path(root: Path, split: str) -> Path:
    return Path(root) / "ImageSets" / "Segmentation" / f"{split}.txt"


def read_image(path: Path) -> np.ndarray:
    """An RGB image as uint8 (H, W, 3). Raises ValueError naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from err


def read_mask(path: Path) -> np.ndarray:
    """A label mask as uint8 (H, W) of label indices (palette PNGs keep their indices)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise ValueError(f"expected a palette or greyscale PNG, got mode {im.mode}")
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot read mask ({err})") from err


def read_split(root: Path, split: str) -> list[str]:
    path = split_path(root, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split list '{split}' not found")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def labels_of_mask(mask: np.ndarray) -> list[int]:
    """Image-level label: indices (0-based, into CLASS_NAMES) of the object classes in a mask."""
    values = np.unique(mask)
    return [int(v) - 1 for v in values if 1 <= v <= NUM_CLASSES]
