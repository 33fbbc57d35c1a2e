"""Figures a person would rather look at than read: CAM and label overlays, threshold curves,
confusion matrices. Written explicitly by the stages (never as a side effect of computing)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .data.classes import IGNORE, PALETTE, ClassList  # noqa: E402
from .io import save_figure  # noqa: E402


def colorize(labels: np.ndarray) -> np.ndarray:
    """Label map -> RGB with the label palette (255 shown white)."""
    rgb = PALETTE[np.asarray(labels, dtype=np.uint8)].copy()
    rgb[labels == IGNORE] = 255
    return rgb


def blend(image: np.ndarray, overlay: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return (image.astype(np.float32) * (1 - alpha) + overlay.astype(np.float32) * alpha).astype(np.uint8)


def heatmap(cam: np.ndarray) -> np.ndarray:
    return (plt.get_cmap("jet")(np.clip(cam, 0, 1))[..., :3] * 255).astype(np.uint8)


def _panel(path: Path, tiles: Sequence[tuple[str, np.ndarray]]) -> None:
    fig, axes = plt.subplots(1, len(tiles), figsize=(3.2 * len(tiles), 3.0))
    for ax, (title, tile) in zip(np.atleast_1d(axes), tiles):
        ax.imshow(tile)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    save_figure(path, fig)
    plt.close(fig)


def cam_figure(path: Path, image: np.ndarray, cams: np.ndarray, keys: Sequence[int], gt: np.ndarray | None,
               pred: np.ndarray, classes: ClassList) -> None:
    """Image, the CAM heat map of each labelled class over it, the thresholded labels and the ground truth
    (when the image has a mask)."""
    tiles = [("image", image)]
    tiles += [(f"CAM {classes.names[k]}", blend(image, heatmap(c))) for k, c in zip(keys, cams)]
    tiles += [("CAM labels", blend(image, colorize(pred), 0.6))]
    if gt is not None:
        tiles += [("ground truth", blend(image, colorize(gt), 0.6))]
    _panel(path, tiles)


def label_figure(path: Path, image: np.ndarray, named_maps: Sequence[tuple[str, np.ndarray]]) -> None:
    """Image beside label maps (ground truth, prediction, ...) blended over it."""
    _panel(path, [("image", image)] + [(name, blend(image, colorize(m), 0.6)) for name, m in named_maps])


def confusion_figure(path: Path, matrix: np.ndarray, names: Sequence[str]) -> None:
    """Row-normalised confusion matrix (rows: ground truth); names: the label names (background first)."""
    rows = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    side = min(40, max(6, 0.35 * len(names) + 2))  # readable from VOC's 21 labels to COCO's 81
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    fig.colorbar(im, ax=ax, fraction=0.046)
    save_figure(path, fig)
    plt.close(fig)


def pick_figure_ids(ids: Sequence[str], n: int) -> list[str]:
    """A fixed, evenly spaced handful of ids (the same ones in every run)."""
    ids = sorted(ids)
    if n <= 0 or not ids:
        return []
    step = max(1, len(ids) // n)
    return ids[::step][:n]
