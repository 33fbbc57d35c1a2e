"""Torch datasets of the training stages: images with image-level labels (CAM training) and images with label
maps (segmentation training), augmented by data.transforms."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .images import read_mask
from .prepared import PreparedDataset
from .transforms import augment, multi_hot, to_tensor


class ClassificationDataset(Dataset):
    """(image, multi-hot label) for CAM training."""

    def __init__(self, data: PreparedDataset, ids: Sequence[str], *, crop: int, long_side: tuple[int, int],
                 scale_range=(1.0, 1.0), flip: bool = True, interpolation: str = "bilinear", pad: str = "black"):
        self.data, self.ids = data, list(ids)
        self.crop, self.long_side, self.scale_range, self.flip = crop, tuple(long_side), tuple(scale_range), flip
        self.interpolation, self.pad = interpolation, pad

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        image_id = self.ids[i]
        image = to_tensor(self.data.read_image(image_id))
        image, _ = augment(image, None, long_side=self.long_side, scale_range=self.scale_range,
                           crop=self.crop, flip=self.flip, interpolation=self.interpolation, pad=self.pad)
        return image, multi_hot(self.data.labels[image_id], self.data.classes.num_classes)


class SegmentationDataset(Dataset):
    """(image, label map with 255 ignored) from a folder of label PNGs (pseudo-labels or ground truth)."""

    def __init__(self, data: PreparedDataset, ids: Sequence[str], label_paths: dict[str, Path], *, crop: int,
                 scale_range=(0.5, 1.5), flip: bool = True, interpolation: str = "bilinear", pad: str = "black"):
        missing = [str(label_paths[i]) for i in ids if not Path(label_paths[i]).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} label file(s) missing, e.g. {missing[:3]}")
        self.data, self.ids, self.label_paths = data, list(ids), label_paths
        self.crop, self.scale_range, self.flip = crop, tuple(scale_range), flip
        self.interpolation, self.pad = interpolation, pad

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        image_id = self.ids[i]
        image = self.data.read_image(image_id)
        target = read_mask(self.label_paths[image_id])
        if target.shape != image.shape[:2]:
            raise ValueError(f"{self.label_paths[image_id]}: label size {target.shape} differs from image "
                             f"{image.shape[:2]} ({image_id})")
        image, target = augment(to_tensor(image), torch.from_numpy(target.astype(np.int64)),
                                scale_range=self.scale_range, crop=self.crop, flip=self.flip,
                                interpolation=self.interpolation, pad=self.pad)
        return image, target
