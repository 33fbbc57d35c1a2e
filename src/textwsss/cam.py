"""Multi-scale CAM inference (METHODS.md section 1) and CAM scoring with a background-threshold sweep.

CAM_k = sum over scales and flips of ReLU(W_k^T Z) (before the sigmoid) upsampled to the image,
then divided by its maximum per class. Only the classes of the image-level label are kept.

How a scale's map reaches the image (`geometry`): 'stretch' resizes it to H x W; 'irn' resizes it to H x W
rounded up to a multiple of 16 (IRN's strided_up_size, the network's stride) and keeps the top-left H x W, as
IRN's and CLIMS's make_cam.py do (the map's last cell covers the padding past the image's edge). Beside the
full-resolution maps, the stride-4 maps of IRN's random walk (IRN's `cam` beside `high_res`): each scale's map
resized to (ceil(H/4), ceil(W/4)) (IRN's strided_size), summed, normalised per class the same way.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .metrics import ConfusionMatrix

EPS = 1e-5
#: IRN's make_cam.py: the full-resolution maps are upsampled to the image size rounded up to this (its network's
#: output stride), then cropped; the random walk's maps are at stride 4 (IRN's `cam`).
IRN_UP_STRIDE = 16
WALK_STRIDE = 4
GEOMETRIES = ("stretch", "irn")
RESIZES = ("torch", "pil")


def strided_size(size: Sequence[int], stride: int) -> tuple[int, int]:
    """(ceil(H / stride), ceil(W / stride)): IRN's imutils.get_strided_size."""
    return (size[0] - 1) // stride + 1, (size[1] - 1) // stride + 1


def strided_up_size(size: Sequence[int], stride: int) -> tuple[int, int]:
    """The size rounded up to a multiple of `stride`: IRN's imutils.get_strided_up_size."""
    h, w = strided_size(size, stride)
    return h * stride, w * stride


def normalise_per_class(cams: torch.Tensor) -> torch.Tensor:
    """(C, H, W) non-negative maps divided by each map's maximum (all-zero maps stay zero)."""
    peak = cams.flatten(1).amax(1).clamp_min(EPS)
    return cams / peak[:, None, None]


def _forward_capped(model, inputs: torch.Tensor, max_pixels: int) -> torch.Tensor:
    """model(inputs) in passes of at most `max_pixels` input pixels (at least one image per pass).

    On a CPU a large batch of large images runs out of cache and costs more per image than one at a
    time, while small scales gain from batching; the cap keeps both in their fast regime (0: no cap).
    """
    if max_pixels <= 0:
        return model(inputs)
    per_pass = max(1, max_pixels // (inputs.shape[-2] * inputs.shape[-1]))
    return torch.cat([model(chunk) for chunk in inputs.split(per_pass)])


def _network_maps(model, batch: torch.Tensor, keys: Sequence[Sequence[int]], flip: bool,
                  max_pixels: int = 0) -> list[torch.Tensor]:
    """ReLU'd maps of the labelled classes of a batch of same-size images at one scale, at the network's
    resolution, each plus its flip's (flipped back; the flips go through the same forward pass)."""
    n = batch.shape[0]
    inputs = torch.cat([batch, batch.flip(-1)]) if flip else batch
    maps = F.relu(_forward_capped(model, inputs, max_pixels))
    results = []
    for i in range(n):
        idx = torch.as_tensor(list(keys[i]), dtype=torch.long, device=maps.device)
        m = maps[i, idx]
        if flip:
            m = m + maps[n + i, idx].flip(-1)
        results.append(m)
    return results


def resize_map(m: torch.Tensor, size: tuple[int, int], geometry: str = "stretch") -> torch.Tensor:
    """(C, h, w) network map -> (C, *size) (module docstring: 'stretch' or IRN's 'irn' geometry)."""
    if geometry == "stretch":
        return F.interpolate(m[None], size=size, mode="bilinear", align_corners=False)[0]
    if geometry != "irn":
        raise ValueError(f"geometry: expected one of {GEOMETRIES}, got {geometry!r}")
    up = strided_up_size(size, IRN_UP_STRIDE)
    return F.interpolate(m[None], size=up, mode="bilinear", align_corners=False)[0, :, :size[0], :size[1]]


def _scaled(images: torch.Tensor, scale: float, interpolation: str = "bilinear", resize: str = "torch") -> torch.Tensor:
    if scale == 1.0:
        return images
    from .data.transforms import pil_resize_images, resize_image

    h, w = images.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if resize == "pil":
        return pil_resize_images(images, size, interpolation)
    if resize != "torch":
        raise ValueError(f"resize: expected one of {RESIZES}, got {resize!r}")
    return resize_image(images, size, interpolation)


def _multiscale(model, images: torch.Tensor, keys: Sequence[Sequence[int]], scales: Sequence[float], flip: bool,
                max_pixels: int, interpolation: str, geometry: str, resize: str,
                strided_sizes: Sequence[tuple[int, int]] | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    out_size = tuple(images.shape[-2:])
    total = [torch.zeros((len(k), *out_size), device=images.device) for k in keys]
    strided = [torch.zeros((len(k), *s), device=images.device) for k, s in zip(keys, strided_sizes or [])]
    for scale in scales:
        scaled = _scaled(images, scale, interpolation, resize)
        for i, m in enumerate(_network_maps(model, scaled, keys, flip, max_pixels)):
            total[i] += resize_map(m, out_size, geometry)
            if strided_sizes is not None:
                # IRN's `cam`: every scale's map stretched straight to the stride-4 grid of the image
                strided[i] += resize_map(m, tuple(strided_sizes[i]), "stretch")
    return [normalise_per_class(t) for t in total], [normalise_per_class(t) for t in strided]


@torch.inference_mode()
def multiscale_cams(model, images: torch.Tensor, keys: Sequence[Sequence[int]], scales: Sequence[float],
                    flip: bool = True, max_pixels: int = 0, interpolation: str = "bilinear",
                    geometry: str = "stretch", resize: str = "torch") -> list[torch.Tensor]:
    """CAMs for a batch of same-size images (B, 3, H, W) in [0, 1]: one forward pass per scale
    (split into passes of at most `max_pixels` input pixels when that is set). `interpolation` and `resize`
    ('torch', or 'pil': PIL on the 8-bit image, as IRN's data pipeline) resize the image to each scale;
    `geometry` ('stretch' or 'irn') brings each scale's map to H x W (module docstring).

    Returns, per image, a (len(keys[i]), H, W) float tensor normalised per class.
    """
    return _multiscale(model, images, keys, scales, flip, max_pixels, interpolation, geometry, resize, None)[0]


@torch.inference_mode()
def multiscale_cams_strided(model, images: torch.Tensor, keys: Sequence[Sequence[int]],
                            strided_sizes: Sequence[tuple[int, int]], scales: Sequence[float], flip: bool = True,
                            max_pixels: int = 0, interpolation: str = "bilinear", geometry: str = "stretch",
                            resize: str = "torch") -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """multiscale_cams, and with them the stride-4 maps of the random walk: (full-resolution CAMs, maps of
    strided_sizes[i], e.g. strided_size(original size of image i, WALK_STRIDE)), both normalised per class."""
    return _multiscale(model, images, keys, scales, flip, max_pixels, interpolation, geometry, resize, strided_sizes)


@torch.inference_mode()
def reference_cam(model, image: torch.Tensor, keys: Sequence[int], scales: Sequence[float],
                  flip: bool = True) -> torch.Tensor:
    """The plain loop (one image, one scale, one flip per forward pass): the benchmark's reference."""
    out_size = tuple(image.shape[-2:])
    total = torch.zeros((len(keys), *out_size), device=image.device)
    idx = torch.as_tensor(list(keys), dtype=torch.long, device=image.device)
    for scale in scales:
        x = _scaled(image[None], scale)
        for flipped in ([False, True] if flip else [False]):
            inp = x.flip(-1) if flipped else x
            m = F.relu(model(inp))[0, idx]
            m = m.flip(-1) if flipped else m
            total += F.interpolate(m[None], size=out_size, mode="bilinear", align_corners=False)[0]
    return normalise_per_class(total)


def group_by_size(sizes: dict[str, tuple[int, int]], batch_size: int) -> list[list[str]]:
    """Batches of ids whose images share a size, in a deterministic order."""
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for image_id in sorted(sizes):
        groups[sizes[image_id]].append(image_id)
    batches = []
    for size in sorted(groups):
        ids = groups[size]
        batches += [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]
    return batches


def labels_from_cams(cams: np.ndarray, keys: Sequence[int], threshold: float) -> np.ndarray:
    """Label map: argmax over [threshold, CAM_k of present classes]; class k is label k + 1."""
    if len(keys) == 0:
        return np.zeros(cams.shape[1:], dtype=np.uint8)
    bg = np.full((1, *cams.shape[1:]), threshold, dtype=np.float32)
    stacked = np.concatenate([bg, cams.astype(np.float32)])
    lut = np.array([0, *[k + 1 for k in keys]], dtype=np.uint8)
    return lut[stacked.argmax(0)]


def sweep_thresholds(items: Iterable[tuple[np.ndarray, Sequence[int], np.ndarray]], thresholds: Sequence[float],
                     label_names: Sequence[str]) -> tuple[dict, list[dict]]:
    """Scores CAMs against ground truth at every background threshold (one confusion matrix each).

    items: (cams (C, H, W), keys, gt mask); label_names: background first, then the classes. Returns the best
    threshold's summary (with "threshold" and "n_images") and the whole curve [{threshold, miou}]; with no
    items, a summary of None values and an empty curve.
    """
    matrices = {t: ConfusionMatrix(label_names) for t in thresholds}
    n = 0
    for cams, keys, gt in items:
        if cams.shape[1:] != gt.shape:
            raise ValueError(f"CAM size {cams.shape[1:]} differs from ground truth {gt.shape}")
        for t, cm in matrices.items():
            cm.update(labels_from_cams(cams, keys, t), gt)
        n += 1
    if n == 0:
        return {"miou": None, "threshold": None, "per_class": {}, "absent": [], "n_images": 0}, []
    curve = [{"threshold": t, "miou": cm.summary()["miou"]} for t, cm in matrices.items()]
    best = max(curve, key=lambda c: (c["miou"], -c["threshold"]))
    summary = matrices[best["threshold"]].summary()
    return {"miou": summary["miou"], "threshold": best["threshold"], "per_class": summary["per_class"],
            "absent": summary["absent"], "n_images": n}, curve


def cam_path(cam_dir: Path, image_id: str) -> Path:
    return Path(cam_dir) / f"{image_id}.npz"


def save_cam(path: Path, cams: np.ndarray, keys: Sequence[int], cams_s4: np.ndarray | None = None) -> None:
    """CAM file (npz): float16 `cams` (C, H, W) in [0, 1] at image resolution, int64 `keys` (C,) class indices,
    and (make_cam writes it) float16 `cams_s4` (C, ceil(H/4), ceil(W/4)), the random walk's stride-4 maps,
    normalised per class as `cams` (IRN's `cam` beside `high_res`)."""
    from .io import save_npz

    arrays = dict(cams=np.asarray(cams, dtype=np.float16), keys=np.asarray(keys, dtype=np.int64))
    if cams_s4 is not None:
        arrays["cams_s4"] = np.asarray(cams_s4, dtype=np.float16)
    save_npz(path, **arrays)


def load_cam(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(cams float32 (C, H, W), keys int64 (C,)) of a CAM file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CAM file not found; run the make_cam stage first")
    with np.load(path) as f:
        missing = [k for k in ("cams", "keys") if k not in f.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing} (has {f.files})")
        return f["cams"].astype(np.float32), f["keys"].astype(np.int64)


def load_cam_strided(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(cams_s4 float32 (C, ceil(H/4), ceil(W/4)), keys int64 (C,)) of a CAM file: the random walk's maps;
    errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CAM file not found; run the make_cam stage first")
    with np.load(path) as f:
        if "keys" not in f.files:
            raise ValueError(f"{path}: missing array 'keys' (has {f.files})")
        if "cams_s4" not in f.files:
            raise ValueError(f"{path}: no stride-4 CAMs ('cams_s4'; has {f.files}): made by an older make_cam; "
                             f"rerun make_cam (`dvc repro -s -f make_cam`)")
        return f["cams_s4"].astype(np.float32), f["keys"].astype(np.int64)
