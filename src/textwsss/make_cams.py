"""The make_cam stage's library: CAMs of every image of a split, batched by image size, stored compactly."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .cam import group_by_size, multiscale_cams, save_cam
from .datasets import to_tensor
from .models.runtime import for_inference, image_probe
from .voc import image_path, read_image

log = logging.getLogger(__name__)


def working_size(h: int, w: int, max_side: int) -> tuple[int, int]:
    """The size CAMs are computed at: the image downscaled so its long side is at most `max_side` (0: as is)."""
    if max_side <= 0 or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def image_sizes(root: Path, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
    from PIL import Image

    sizes = {}
    for i in ids:
        with Image.open(image_path(root, i)) as im:
            sizes[i] = (im.height, im.width)
    return sizes


def make_cams(model, root: Path, ids: Sequence[str], labels: dict[str, list[int]], out_dir: Path, *,
              scales: Sequence[float], flip: bool, max_side: int, batch_size: int = 4, max_pixels: int = 0,
              device: str | torch.device = "cpu") -> None:
    """Writes out_dir/<id>.npz (float16 CAMs at the original image size, with the class indices)."""
    model = for_inference(model, device, probe=image_probe(device))
    sizes = image_sizes(root, ids)
    work = {i: working_size(*sizes[i], max_side) for i in ids}
    batches = group_by_size(work, batch_size)
    with tqdm(total=len(ids), desc="make_cam", unit="img", disable=None) as bar:
        for batch_ids in batches:
            images = []
            for i in batch_ids:
                x = to_tensor(read_image(image_path(root, i)))
                if work[i] != sizes[i]:
                    x = F.interpolate(x[None], size=work[i], mode="bilinear", align_corners=False)[0]
                images.append(x)
            keys = [labels[i] for i in batch_ids]
            cams = multiscale_cams(model, torch.stack(images).to(device), keys, scales, flip, max_pixels)
            for i, k, cam in zip(batch_ids, keys, cams):
                if work[i] != sizes[i] and len(k):
                    cam = F.interpolate(cam[None], size=sizes[i], mode="bilinear", align_corners=False)[0]
                elif not len(k):
                    cam = cam.new_zeros((0, *sizes[i]))
                save_cam(out_dir / f"{i}.npz", cam.cpu().numpy(), k)
            bar.update(len(batch_ids))
    log.info("CAMs of %d images written to %s", len(ids), out_dir)
