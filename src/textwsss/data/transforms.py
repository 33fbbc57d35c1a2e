"""The random resize / flip / crop augmentation of the training stages, on (3, H, W) float images in [0, 1]
and optional (H, W) label maps.

Randomness comes from torch's global generator (seeded per epoch by the training loop, per worker
by the DataLoader), so an epoch's augmentation is the same whether training ran through or resumed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .classes import IGNORE


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)


def multi_hot(indices: Sequence[int], num_classes: int) -> torch.Tensor:
    y = torch.zeros(num_classes)
    y[list(indices)] = 1
    return y


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


IMAGENET_MEAN = (0.485, 0.456, 0.406)


def resize_image(images: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] resized; bicubic (IRN / CLIMS rescale with PIL's bicubic) is clipped to
    [0, 1], as an 8-bit image would be."""
    out = F.interpolate(images, size=size, mode=interpolation, align_corners=False)
    return out.clamp_(0.0, 1.0) if interpolation == "bicubic" else out


def pil_resize_uint8(image: np.ndarray, size: tuple[int, int], interpolation: str = "bicubic") -> np.ndarray:
    """uint8 (H, W, 3) resized to `size` (h, w) by PIL, as IRN's and CLIMS's imutils.pil_resize (PIL's filters
    widen their support when shrinking: antialiased, unlike F.interpolate)."""
    from PIL import Image

    filters = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
    if interpolation not in filters:
        raise ValueError(f"interpolation: expected one of {sorted(filters)} for PIL resizing, got {interpolation!r}")
    if tuple(image.shape[:2]) == tuple(size):
        return image
    return np.array(Image.fromarray(image).resize((size[1], size[0]), filters[interpolation]))  # writable


def pil_resize_images(images: torch.Tensor, size: tuple[int, int], interpolation: str = "bicubic") -> torch.Tensor:
    """(B, 3, H, W) images in [0, 1] holding 8-bit values (to_tensor of uint8) resized image by image by PIL on
    uint8 (pil_resize_uint8): the result is 8-bit again, as IRN's data pipeline feeds its network."""
    u8 = (images.detach() * 255).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([pil_resize_uint8(np.ascontiguousarray(x), size, interpolation) for x in u8])
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(images.device, images.dtype).div_(255)


def resize_pair(image: torch.Tensor, target: torch.Tensor | None, size: tuple[int, int],
                interpolation: str = "bilinear"):
    image = resize_image(image[None], size, interpolation)[0]
    if target is not None:
        target = F.interpolate(target[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, target


def _span(size: int, crop: int) -> tuple[int, int, int]:
    """(offset in the container, offset in the image, length) along one axis (IRN's random crop box)."""
    if size >= crop:
        return 0, int(torch.randint(0, size - crop + 1, ()).item()), crop
    return int(torch.randint(0, crop - size + 1, ()).item()), 0, size


def random_crop_pair(image: torch.Tensor, target: torch.Tensor | None, crop: int, pad: str = "black"):
    """A random crop x crop window. Where the image is smaller than the crop, pad='black' pads it (image 0,
    target 255) at the bottom and right; pad='mean' places it at a random offset in a container of the ImageNet
    mean colour (target 255), as IRN's and CLIMS's random crop do (their 0 after normalisation)."""
    if pad == "mean":
        _, h, w = image.shape
        (ct, it, ch), (cl, il, cw) = _span(h, crop), _span(w, crop)
        out = torch.tensor(IMAGENET_MEAN, dtype=image.dtype).view(3, 1, 1).repeat(1, crop, crop)
        out[:, ct:ct + ch, cl:cl + cw] = image[:, it:it + ch, il:il + cw]
        if target is not None:
            full = torch.full((crop, crop), IGNORE, dtype=target.dtype)
            full[ct:ct + ch, cl:cl + cw] = target[it:it + ch, il:il + cw]
            target = full
        return out, target
    if pad != "black":
        raise ValueError(f"crop_pad: expected 'black' or 'mean', got {pad!r}")
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
            scale_range: tuple[float, float] = (1.0, 1.0), crop: int, flip: bool, interpolation: str = "bilinear",
            pad: str = "black"):
    _, h, w = image.shape
    scale = _uniform(*scale_range)
    if long_side is not None:
        scale *= _uniform(*long_side) / max(h, w)
    if scale != 1.0:
        image, target = resize_pair(image, target, (max(1, round(h * scale)), max(1, round(w * scale))),
                                    interpolation)
    if flip and torch.rand(()).item() < 0.5:
        image = image.flip(-1)
        target = target.flip(-1) if target is not None else None
    return random_crop_pair(image, target, crop, pad)
