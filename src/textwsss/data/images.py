"""Reading images and label masks, and the sizes the stages work at."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """An RGB image as uint8 (H, W, 3). Raises ValueError naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from err


def read_mask(path: str | Path) -> np.ndarray:
    """A label mask as uint8 (H, W) of label indices (palette PNGs keep their indices)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise ValueError(f"expected a palette or greyscale PNG of label indices, got mode {im.mode}")
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"{path}: cannot read mask ({err})") from err


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    with Image.open(path) as im:
        return im.height, im.width


def working_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    """The image downscaled so its long side is at most `max_side` (0: as is)."""
    if max_side <= 0 or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))
