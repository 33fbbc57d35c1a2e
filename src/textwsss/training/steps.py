"""The model-specific part of each training: one step's losses, for `train.fit`."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from .loop import StepFn


def clims_step(matcher, class_concepts: Sequence[str], background_concepts, *, alpha: float, beta: float,
               gamma: float, delta: float, cbs_threshold: float, class_weights: torch.Tensor | None,
               max_images_per_call: int = 0, reduction: str = "official", input_mode: str = "clip",
               align_corners: bool = False) -> StepFn:
    from ..losses.clims import clims_loss

    def step(model, batch, device):
        images, labels = (t.to(device, non_blocking=True) for t in batch)
        maps = torch.sigmoid(model(images))
        return clims_loss(maps, images, labels, matcher, class_concepts, background_concepts, alpha=alpha,
                          beta=beta, gamma=gamma, delta=delta, cbs_threshold=cbs_threshold,
                          class_weights=None if class_weights is None else class_weights.to(device),
                          max_images_per_call=max_images_per_call, reduction=reduction, input_mode=input_mode,
                          align_corners=align_corners)
    return step


def bce_step() -> StepFn:
    from ..losses.clims import bce_loss

    def step(model, batch, device):
        images, labels = (t.to(device, non_blocking=True) for t in batch)
        return bce_loss(model(images), labels)
    return step


def deeplab_step(class_weights: torch.Tensor | None = None) -> StepFn:
    """Cross-entropy, optionally weighted per class (losses.segmentation.balanced_class_weights)."""
    from ..losses.segmentation import cross_entropy

    def step(model, batch, device):
        images, target = (t.to(device, non_blocking=True) for t in batch)
        loss = cross_entropy(model(images), target, weight=class_weights)
        return {"total": loss, "ce": loss}
    return step


def pick_cris_targets(targets: torch.Tensor, num_classes: int) -> tuple[list[int], torch.Tensor]:
    """One (class, binary mask) sample per image, drawn with torch's RNG among its `cris_samples` (one per
    present class); an image without objects gets a random absent class and an all-background target."""
    from ..losses.segmentation import IGNORE, cris_samples

    classes, masks = [], []
    for t in targets:
        samples = cris_samples(t, num_classes=num_classes)
        if samples:
            k, target = samples[int(torch.randint(len(samples), ()).item())]
            binary = torch.from_numpy(target).long()
        else:
            k = int(torch.randint(num_classes, ()).item())
            binary = torch.where(t == IGNORE, IGNORE, 0).long()
        classes.append(k)
        masks.append(binary)
    return classes, torch.stack(masks)


def cris_step(class_concepts: Sequence[str]) -> StepFn:
    from ..losses.segmentation import text_to_pixel_loss

    def step(model, batch, device):
        images, targets = batch
        classes, binary = pick_cris_targets(targets, len(class_concepts))
        logits = model(images.to(device, non_blocking=True), [class_concepts[k] for k in classes])
        loss = text_to_pixel_loss(logits, binary.to(device))
        return {"total": loss, "contrastive": loss}
    return step


def class_weight_tensor(weights: Mapping[str, float], names: Sequence[str]) -> torch.Tensor | None:
    if not weights:
        return None
    return torch.tensor([float(weights.get(n, 1.0)) for n in names])
