"""The pixel pairs IRN relates on the stride-4 grid, and the pixels on the path between the two ends.

Directions (as IRN's PathIndex): every offset (dy, dx) with dx^2 + dy^2 < radius^2 that points "forward"
(dy > 0, or dy = 0 and dx > 0), so each unordered pair appears once. The path of an offset is every grid point
of its bounding box whose distance to the segment's line is below one pixel, both ends included.

Pairs: every pair of grid pixels, both inside the map, whose offset is such a direction. (IRN's training code
keeps only sources at least radius - 1 from the left, right and bottom borders so that all directions fit one
rectangular crop; its random walk pads the map so that every in-map pair is kept. We keep every in-map pair in
both, so training also sees the relations near the borders.)
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor


def search_offsets(radius: int) -> list[tuple[int, int]]:
    """The forward offsets (dy, dx) within `radius` (strictly: dx^2 + dy^2 < radius^2), in IRN's order."""
    if int(radius) != radius or radius < 2:
        raise ValueError(f"radius: expected an integer >= 2, got {radius!r}")
    r = int(radius)
    offsets = [(0, dx) for dx in range(1, r)]
    offsets += [(dy, dx) for dy in range(1, r) for dx in range(-r + 1, r) if dx * dx + dy * dy < r * r]
    return offsets


def line_path(dy: int, dx: int) -> np.ndarray:
    """(L, 2) grid points (y, x) of the box spanned by (0, 0) and (dy, dx) closer than one pixel to the line
    through them, ordered along the line: the first is (0, 0), the last (dy, dx)."""
    length_sq = dy * dy + dx * dx
    points = [(y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)
              if (dy * x - dx * y) ** 2 < length_sq]
    points.sort(key=lambda p: p[0] * dy + p[1] * dx)
    return np.asarray(points, dtype=np.int64)


@dataclass(frozen=True)
class PairIndex:
    """The pairs of an (height, width) grid: `src`, `dst` flat pixel indices (n_pairs,), and the paths grouped by
    length, `paths[g]` a (L_g, n_g) array of flat indices (the groups' pairs, in order, are the n_pairs pairs)."""

    height: int
    width: int
    radius: int
    src: np.ndarray
    dst: np.ndarray
    paths: tuple[np.ndarray, ...]

    @property
    def n_pixels(self) -> int:
        return self.height * self.width

    @property
    def n_pairs(self) -> int:
        return len(self.src)

    def affinity(self, boundary: Tensor) -> Tensor:
        """a_ij = 1 - max of the boundary map over the path from i to j: (B, h, w) or (h, w) -> (B, n_pairs)
        or (n_pairs,)."""
        if tuple(boundary.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"boundary map: expected size {(self.height, self.width)} (the pair index's grid), "
                             f"got {tuple(boundary.shape[-2:])}")
        flat = boundary.reshape(*boundary.shape[:-2], -1)
        parts = []
        for path in self.paths:
            index = torch.from_numpy(path).to(flat.device)
            values = flat[..., index.reshape(-1)].reshape(*flat.shape[:-1], *path.shape)
            parts.append(values.amax(-2))
        return 1 - torch.cat(parts, -1)


@lru_cache(maxsize=32)
def pair_index(height: int, width: int, radius: int) -> PairIndex:
    """The PairIndex of a (height, width) grid (cached: training crops and walks reuse a few sizes)."""
    if height < 1 or width < 1:
        raise ValueError(f"grid size: expected positive height and width, got {(height, width)}")
    grid = np.arange(height * width, dtype=np.int64).reshape(height, width)
    by_length: dict[int, list[np.ndarray]] = {}
    for dy, dx in search_offsets(radius):
        x0, x1 = max(0, -dx), width - max(0, dx)
        if dy >= height or x1 <= x0:  # the offset does not fit the grid (a negative slice end would wrap)
            continue
        sources = grid[:height - dy, x0:x1].reshape(-1)
        path = line_path(dy, dx)
        # path[k] offsets the source; the flat index of (y + py, x + px) is src + py * width + px
        steps = (path[:, 0] * width + path[:, 1])[:, None]
        by_length.setdefault(len(path), []).append(sources[None, :] + steps)
    paths = tuple(np.concatenate(by_length[n], axis=1) for n in sorted(by_length))
    if not paths:
        empty = np.zeros(0, dtype=np.int64)
        return PairIndex(height, width, int(radius), empty, empty, ())
    src = np.concatenate([p[0] for p in paths])  # line_path starts at the source and ends at the destination
    dst = np.concatenate([p[-1] for p in paths])
    return PairIndex(height, width, int(radius), src, dst, paths)

