"""The eval_cam stage's library: score stored CAMs against the masks with a background-threshold sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .cam import labels_from_cams, load_cam, sweep_thresholds
from .viz import cam_figure, pick_figure_ids
from .voc import image_path, mask_path, read_image, read_mask


def _items(root: Path, ids: Sequence[str], cam_dir: Path):
    for i in ids:
        cams, keys = load_cam(cam_dir / f"{i}.npz")
        gt = read_mask(mask_path(root, i))
        if cams.shape[1:] != gt.shape:
            raise ValueError(f"{cam_dir / f'{i}.npz'}: CAM size {cams.shape[1:]} differs from mask {gt.shape} ({i})")
        yield cams, keys, gt


def evaluate_cams(root: Path, ids: Sequence[str], cam_dir: Path, thresholds: Sequence[float]):
    return sweep_thresholds(_items(root, ids, cam_dir), thresholds)


def write_cam_figures(root: Path, ids: Sequence[str], cam_dir: Path, threshold: float, out_dir: Path,
                      n: int) -> None:
    for i in pick_figure_ids(ids, n):
        cams, keys = load_cam(cam_dir / f"{i}.npz")
        cam_figure(out_dir / f"{i}.png", read_image(image_path(root, i)), cams, keys,
                   read_mask(mask_path(root, i)), labels_from_cams(cams, keys, threshold))
