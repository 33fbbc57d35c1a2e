"""The images a matcher calibrates its per-concept scores on: the whole train images at its input size,
with their image-level labels (the only supervision weakly supervised training may use)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..data.prepared import PreparedDataset
from ..data.transforms import multi_hot, to_tensor


def calibration_batch(data: PreparedDataset, ids: Sequence[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N,3,size,size) in [0,1], labels (N,K) multi-hot) of `ids`."""
    images = [F.interpolate(to_tensor(data.read_image(i))[None], size=(size, size), mode="bilinear",
                            align_corners=False)[0] for i in ids]
    labels = [multi_hot(data.labels[i], data.classes.num_classes) for i in ids]
    return torch.stack(images), torch.stack(labels)
