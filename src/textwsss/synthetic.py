"""Synthetic scenes: objects of known classes on textured backgrounds, with exact masks.

Seeded and fast, for tests of every stage. Each class has its own colour and shape family
(ellipse, rectangle or triangle), so a small network can learn to tell them apart in seconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.draw import ellipse, polygon, rectangle

NUM_CLASSES = 20  # scenes draw from the first classes of a 20-class list by default


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, 0 background, k + 1 for class k
    labels: tuple[int, ...]  # 0-based class indices present


def class_colour(k: int) -> np.ndarray:
    """A distinct, saturated colour per class (deterministic)."""
    hue = (k * 0.618033988749895) % 1.0
    h6 = hue * 6
    c, x = 200, int(200 * (1 - abs(h6 % 2 - 1)))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h6) % 6]
    return np.array(rgb, dtype=np.float32) + 40


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-contrast grey noise smoothed into blobs, so the background is not flat."""
    coarse = rng.uniform(60, 120, size=(h // 8 + 2, w // 8 + 2, 1))
    up = np.kron(coarse, np.ones((8, 8, 1)))[:h, :w]
    return np.repeat(up, 3, axis=2) + rng.normal(0, 6, size=(h, w, 3))


def _draw_shape(k: int, rng: np.random.Generator, h: int, w: int):
    size = rng.uniform(0.22, 0.38) * min(h, w)
    cy, cx = rng.uniform(size, h - size), rng.uniform(size, w - size)
    kind = k % 3
    if kind == 0:
        return ellipse(cy, cx, size, size * rng.uniform(0.6, 1.0), shape=(h, w))
    if kind == 1:
        half = size * 0.8
        return rectangle((int(cy - half), int(cx - half)), (int(cy + half), int(cx + half)), shape=(h, w))
    return polygon([cy - size, cy + size, cy + size], [cx, cx - size, cx + size], shape=(h, w))


def make_scene(rng: np.random.Generator, size: int = 64, classes: tuple[int, ...] | None = None,
               num_classes: int = NUM_CLASSES, max_objects: int = 2) -> Scene:
    h = w = size
    if classes is None:
        n = int(rng.integers(1, max_objects + 1))
        classes = tuple(int(c) for c in rng.choice(num_classes, size=n, replace=False))
    image = _texture(rng, h, w)
    mask = np.zeros((h, w), dtype=np.uint8)
    for k in classes:
        rr, cc = (np.asarray(a).ravel() for a in _draw_shape(k, rng, h, w))
        image[rr, cc] = class_colour(k) + rng.normal(0, 8, size=(len(rr), 3))
        mask[rr, cc] = k + 1
    present = tuple(sorted(int(v) - 1 for v in np.unique(mask) if v > 0))
    return Scene(np.clip(image, 0, 255).astype(np.uint8), mask, present)


def make_scenes(n: int, seed: int = 0, size: int = 64, num_classes: int = NUM_CLASSES,
                max_objects: int = 2) -> list[Scene]:
    """`n` scenes drawn from `num_classes` classes (the first ones of VOC), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    return [make_scene(rng, size, None, num_classes, max_objects) for _ in range(n)]


def write_voc_root(root, train: int = 8, val: int = 4, seed: int = 0, size: int = 64,
                   num_classes: int = 3) -> None:
    """A VOC-layout folder of synthetic scenes (JPEGImages, SegmentationClass, ImageSets), for stage tests."""
    from pathlib import Path

    from PIL import Image

    from .io import save_label_png

    root = Path(root)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    scenes = make_scenes(train + val, seed=seed, size=size, num_classes=num_classes)
    ids = [f"syn_{i:04d}" for i in range(len(scenes))]
    for image_id, scene in zip(ids, scenes):
        Image.fromarray(scene.image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        save_label_png(root / "SegmentationClass" / f"{image_id}.png", scene.mask)
    splits = {"train": ids[:train], "val": ids[train:], "trainval": ids}
    for name, members in splits.items():
        (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("\n".join(members) + "\n")
