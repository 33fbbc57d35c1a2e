"""Torch datasets over a VOC root: images with image-level labels (CAM training) and images with
label maps (segmentation training), with the random resize / flip / crop augmentation.

Randomness comes from torch's global generator (seeded per epoch by the training loop, per worker
by the DataLoader), so an epoch's augmentation is the same whether training ran through or resumed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .voc import IGNORE, NUM_CLASSES, image_path, read_image, read_mask


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)


def multi_hot(indices: Sequence[int], num_classes: int = NUM_CLASSES) -> torch.Tensor:
    y = torch.zeros(num_classes)
    y[list(indices)] = 1
    return y


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def resize_pair(image: torch.Tensor, target: torch.Tensor | None, size: tuple[int, int]):
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    if target is not None:
        target = F.interpolate(target[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, target


def random_crop_pair(image: torch.Tensor, target: torch.Tensor | None, crop: int):
    """Pads (image 0, target 255) up to `crop`, then crops a random crop x crop window."""
    _, h, w = image.shape
    ph, pw = max(crop - h, 0), max(crop - w, 0)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        if target is not None:
            target = F.pad(target, (0, pw, 0, ph), value=IGNORE)
    _, h, w = image.shape
    top = int(torch.randint(0, h - crop + 1, ()).item())
    left = int(torch.randint(0, w - crop + 1, ()).item())
    image = image[:, top:top + crop, left:left + crop]
    if target is not None:
        target = target[top:top + crop, left:left + crop]
    return image, target


def augment(image: torch.Tensor, target: torch.Tensor | None, *, long_side: tuple[int, int] | None = None,
            scale_range: tuple[float, float] = (1.0, 1.0), crop: int, flip: bool):
    _, h, w = image.shape
    scale = _uniform(*scale_range)
    if long_side is not None:
        scale *= _uniform(*long_side) / max(h, w)
    if scale != 1.0:
        image, target = resize_pair(image, target, (max(1, round(h * scale)), max(1, round(w * scale))))
    if flip and torch.rand(()).item() < 0.5:
        image = image.flip(-1)
        target = target.flip(-1) if target is not None else None
    return random_crop_pair(image, target, crop)


class ClassificationDataset(Dataset):
    """(image, multi-hot label) for CAM training."""

    def __init__(self, root: Path, ids: Sequence[str], labels: dict[str, list[int]], *, crop: int,
                 long_side: tuple[int, int], scale_range=(1.0, 1.0), flip: bool = True):
        self.root, self.ids, self.labels = Path(root), list(ids), labels
        self.crop, self.long_side, self.scale_range, self.flip = crop, tuple(long_side), tuple(scale_range), flip

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        image_id = self.ids[i]
        image = to_tensor(read_image(image_path(self.root, image_id)))
        image, _ = augment(image, None, long_side=self.long_side, scale_range=self.scale_range,
                           crop=self.crop, flip=self.flip)
        return image, multi_hot(self.labels[image_id])


class SegmentationDataset(Dataset):
    """(image, label map with 255 ignored) from a folder of label PNGs (pseudo-labels or ground truth)."""

    def __init__(self, root: Path, ids: Sequence[str], label_paths: dict[str, Path], *, crop: int,
                 scale_range=(0.5, 1.5), flip: bool = True):
        missing = [str(label_paths[i]) for i in ids if not Path(label_paths[i]).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} label file(s) missing, e.g. {missing[:3]}")
        self.root, self.ids, self.label_paths = Path(root), list(ids), label_paths
        self.crop, self.scale_range, self.flip = crop, tuple(scale_range), flip

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        image_id = self.ids[i]
        image = read_image(image_path(self.root, image_id))
        target = read_mask(self.label_paths[image_id])
        if target.shape != image.shape[:2]:
            raise ValueError(f"{self.label_paths[image_id]}: label size {target.shape} differs from image "
                             f"{image.shape[:2]} ({image_id})")
        image, target = augment(to_tensor(image), torch.from_numpy(target.astype(np.int64)),
                                scale_range=self.scale_range, crop=self.crop, flip=self.flip)
        return image, target
