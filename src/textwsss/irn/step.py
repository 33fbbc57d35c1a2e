"""The relation network's training step for training.loop.fit, and the dataset form it reads.

A batch is (images (B,3,H,W) in [0,1], bg_pos, fg_pos, neg (B, n_pairs) masks): the pair labels are made per
sample in the data pipeline (RelationSamples), as IRN's dataset does, so the step only gathers affinities.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..training.loop import StepFn
from .loss import relation_loss
from .pair_labels import pair_labels, seeds_at_stride
from .pairs import pair_index


class RelationSamples(Dataset):
    """(image, seed map) samples of equal size -> (image, bg_pos, fg_pos, neg) for irn_step.

    images: (3, H, W) float tensors in [0, 1]; seeds: (H, W) label maps (0 background, 1..K, 255 ignored).
    """

    def __init__(self, images: Sequence[torch.Tensor], seeds: Sequence[np.ndarray], radius: int = 10):
        if len(images) != len(seeds):
            raise ValueError(f"seeds: expected one seed map per image ({len(images)}), got {len(seeds)}")
        self.images, self.seeds, self.radius = list(images), list(seeds), radius

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image, seeds = self.images[i], np.asarray(self.seeds[i])
        if tuple(image.shape[-2:]) != seeds.shape:
            raise ValueError(f"sample {i}: image size {tuple(image.shape[-2:])} differs from its seed map's "
                             f"{seeds.shape}")
        reduced = seeds_at_stride(seeds, 4)
        labels = pair_labels(reduced, pair_index(*reduced.shape, self.radius))
        return image, labels.bg_pos, labels.fg_pos, labels.neg


class RelationCrops(Dataset):
    """A dataset of augmented (image (3, H, W), seed map (H, W) tensor) crops, e.g. data.training_sets'
    SegmentationDataset on the CRF seeds, -> (image, bg_pos, fg_pos, neg) for irn_step. The pair labels come
    from the crop's own seeds (pixels the crop padding added are 255, so they relate to nothing), as IRN's
    VOC12AffinityDataset makes them after its random crop."""

    def __init__(self, crops: Dataset, radius: int = 10, num_labels: int | None = None):
        self.crops, self.radius, self.num_labels = crops, radius, num_labels

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, i: int):
        image, seeds = self.crops[i]
        reduced = seeds_at_stride(np.asarray(seeds), 4)
        labels = pair_labels(reduced, pair_index(*reduced.shape, self.radius), self.num_labels)
        return image, labels.bg_pos, labels.fg_pos, labels.neg


def irn_step(radius: int = 10) -> StepFn:
    """IRN's affinity loss on the boundary network's stride-4 map (model: a BoundaryNet, or one wrapped in DDP)."""

    def step(model, batch, device):
        images, bg_pos, fg_pos, neg = (t.to(device, non_blocking=True) for t in batch)
        boundary = torch.sigmoid(model(images)[:, 0].float())
        expected = (math.ceil(images.shape[-2] / 4), math.ceil(images.shape[-1] / 4))
        if tuple(boundary.shape[-2:]) != expected:
            raise ValueError(f"boundary map: expected stride-4 size {expected}, got {tuple(boundary.shape[-2:])}")
        affinity = pair_index(*boundary.shape[-2:], radius).affinity(boundary)
        return relation_loss(affinity, bg_pos, fg_pos, neg)
    return step
