"""The images a matcher calibrates its per-concept scores on: the whole train images at its input size,
with their image-level labels (the only supervision weakly supervised training may use)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..datasets import multi_hot, to_tensor
from ..voc import image_path, read_image


def calibration_batch(root: Path, ids: Sequence[str], labels: dict[str, list[int]], size: int):
    images = [F.interpolate(to_tensor(read_image(image_path(root, i)))[None], size=(size, size), mode="bilinear",
                            align_corners=False)[0] for i in ids]
    return torch.stack(images), torch.stack([multi_hot(labels[i]) for i in ids])
