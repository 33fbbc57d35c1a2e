"""IRN's random walk (misc/indexing.py propagate_to_edge, step/make_sem_seg_labels.py): CAMs at stride 4
propagated over the affinities of a boundary map, then upsampled to full-coverage labels.

Graph: the pairs of pairs.py within `radius` (5), each both ways, a_ij = 1 - max boundary on the path, plus a
self-loop of affinity 1 per pixel. Transition: T = A^beta with every column divided by its sum. Walk: the CAMs,
each multiplied by (1 - boundary), as a (C, n) matrix X, become X T^(2^exp_times).

Two forms of the same product:
- propagate_dense, the reference: the dense n x n T squared exp_times times, as the official code
  (O(n^3) per squaring; n = 12k pixels for a 500 x 375 image).
- propagate, the fast form: X multiplied by the sparse T 2^exp_times times (O(C * nnz) per step, nnz about
  70 n for radius 5). A^beta is symmetric, so X T = ((A^beta D^-1)^T X^T)^T = (D^-1 A^beta X^T)^T with D the
  column sums: each step averages every pixel's neighbours.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F
from torch import Tensor

from .pairs import pair_index


def _check(cams: Tensor, boundary: Tensor) -> None:
    if boundary.dim() != 2:
        raise ValueError(f"boundary map: expected (h, w), got shape {tuple(boundary.shape)}")
    if cams.dim() != 3 or tuple(cams.shape[1:]) != tuple(boundary.shape):
        raise ValueError(f"cams: expected (C, h, w) with (h, w) = {tuple(boundary.shape)} (the boundary map's "
                         f"size), got shape {tuple(cams.shape)}")


def _check_walk(beta: float, exp_times: int) -> None:
    if not beta > 0:
        raise ValueError(f"beta: expected a positive number, got {beta!r}")
    if int(exp_times) != exp_times or exp_times < 0:
        raise ValueError(f"exp_times: expected an integer >= 0, got {exp_times!r}")


def _pairs(boundary: Tensor, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    index = pair_index(*boundary.shape, radius)
    aff = index.affinity(boundary.double()).cpu().numpy()
    return index.src, index.dst, aff


def sparse_affinity(boundary: Tensor, radius: int, beta: float) -> scipy.sparse.csr_array:
    """A^beta as a symmetric sparse (n, n) matrix with the unit self-loops on its diagonal."""
    src, dst, aff = _pairs(boundary, radius)
    n = boundary.numel()
    weights = aff ** beta
    diagonal = np.arange(n)
    rows = np.concatenate([src, dst, diagonal])
    cols = np.concatenate([dst, src, diagonal])
    values = np.concatenate([weights, weights, np.ones(n)])
    return scipy.sparse.csr_array((values, (rows, cols)), shape=(n, n))


def dense_affinity(boundary: Tensor, radius: int, beta: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """A^beta as a dense (n, n) tensor: the pairs both ways and the unit self-loops (the powers in float64)."""
    src, dst, aff = _pairs(boundary, radius)
    n = boundary.numel()
    dense = torch.eye(n, dtype=dtype)
    src, dst, weights = torch.from_numpy(src), torch.from_numpy(dst), (torch.from_numpy(aff) ** beta).to(dtype)
    dense[src, dst] = weights
    dense[dst, src] = weights
    return dense


def _start(cams: Tensor, boundary: Tensor) -> Tensor:
    """The walk's start: each CAM times (1 - boundary), as a (C, n) float64 matrix."""
    return (cams.double() * (1 - boundary.double())).reshape(cams.shape[0], -1)


def propagate_dense(cams: Tensor, boundary: Tensor, *, beta: float = 10, exp_times: int = 8, radius: int = 5,
                    dtype: torch.dtype = torch.float64) -> Tensor:
    """The reference: X T^(2^exp_times) with the dense T squared exp_times times (the official form).
    cams (C, h, w), boundary (h, w) in [0, 1] -> (C, h, w) float64. dtype: the matrix products' precision."""
    _check(cams, boundary)
    _check_walk(beta, exp_times)
    t = dense_affinity(boundary, radius, beta, dtype)
    t /= t.sum(0, keepdim=True)  # in place: at n = 12k every n x n copy is 0.6 GB (float32)
    for _ in range(int(exp_times)):
        t = t @ t
    return (_start(cams, boundary).to(dtype) @ t).double().reshape(cams.shape)


def propagate(cams: Tensor, boundary: Tensor, *, beta: float = 10, exp_times: int = 8, radius: int = 5) -> Tensor:
    """The fast form of propagate_dense: 2^exp_times products of the (C, n) CAM matrix with the sparse T, in
    float64. cams (C, h, w), boundary (h, w) in [0, 1] -> (C, h, w) float64."""
    _check_walk(beta, exp_times)
    return propagate_stages(cams, boundary, beta=beta, exp_times=[exp_times], radius=radius)[int(exp_times)]


def propagate_stages(cams: Tensor, boundary: Tensor, *, beta: float = 10, exp_times: Sequence[int] = (8,),
                     radius: int = 5) -> dict[int, Tensor]:
    """propagate at several exp_times in one walk: {e: the walk after 2^e steps} for each e of exp_times (a
    sweep over exp_times costs the longest walk only)."""
    _check(cams, boundary)
    for e in exp_times:
        _check_walk(beta, e)
    a = sparse_affinity(boundary, radius, beta)
    # T^T = D^-1 A^beta (A symmetric): rows scaled by the inverse column sums of A^beta
    step = (scipy.sparse.diags_array(1 / a.sum(0)) @ a).tocsr()
    y = _start(cams, boundary).numpy().T.copy()  # (n, C)
    wanted = {2 ** int(e): int(e) for e in exp_times}
    out = {}
    for done in range(max(wanted) + 1):
        if done in wanted:
            out[wanted[done]] = torch.from_numpy(np.ascontiguousarray(y.T)).reshape(cams.shape)
        if done < max(wanted):
            y = step @ y
    return out


def walk_labels(cams: Tensor, keys, boundary: Tensor, image_size: tuple[int, int], *, bg_threshold: float = 0.25,
                beta: float = 10, exp_times: int = 8, radius: int = 5, dense: bool = False) -> np.ndarray:
    """Full-coverage labels (H, W) uint8 from the stride-4 CAMs of an image's classes, as make_sem_seg_labels.py.

    cams (C, h, w): one map per labelled class, keys (C,) their class numbers 1..K; boundary (h, w); the walked
    maps are upsampled x4 (bilinear), cropped to image_size, divided by their common maximum, and compete with a
    constant background score bg_threshold (label 0). dense: the reference walk instead of the fast one.
    """
    keys = np.asarray(keys, dtype=np.int64).reshape(-1)
    if len(keys) != cams.shape[0]:
        raise ValueError(f"keys: expected one class number per CAM ({cams.shape[0]}), got {len(keys)}")
    if len(keys) and (keys.min() < 1 or keys.max() > 254):
        raise ValueError(f"keys: expected class numbers 1..254 (0 is the background), got {keys.tolist()}")
    scores = walk_scores(cams, boundary, image_size, bg_threshold=bg_threshold, beta=beta, exp_times=exp_times,
                         radius=radius, dense=dense)
    return labels_from_scores(scores, keys)


def labels_from_scores(scores: Tensor, keys) -> np.ndarray:
    """argmax of walk_scores, as label numbers: 0 for the background row, keys[c] for CAM c."""
    return np.concatenate([[0], np.asarray(keys, dtype=np.int64)])[scores.argmax(0).numpy()].astype(np.uint8)


def walk_scores(cams: Tensor, boundary: Tensor, image_size: tuple[int, int], *, bg_threshold: float = 0.25,
                beta: float = 10, exp_times: int = 8, radius: int = 5, dense: bool = False,
                dense_dtype: torch.dtype = torch.float64) -> Tensor:
    """The (1 + C, H, W) scores walk_labels takes the argmax of: the background row, then the walked CAMs.
    dense_dtype: the reference's matrix precision (the official code's is float32)."""
    h, w = image_size
    if h > 4 * cams.shape[-2] or w > 4 * cams.shape[-1]:
        raise ValueError(f"image_size: expected at most 4x the stride-4 maps {tuple(cams.shape[-2:])}, got "
                         f"{tuple(image_size)}")
    if not cams.shape[0]:
        rw = cams.double()
    elif dense:
        rw = propagate_dense(cams, boundary, beta=beta, exp_times=exp_times, radius=radius, dtype=dense_dtype)
    else:
        rw = propagate(cams, boundary, beta=beta, exp_times=exp_times, radius=radius)
    return torch.cat([torch.full((1, h, w), float(bg_threshold), dtype=torch.float64),
                      walked_maps(rw, image_size)])


def walked_maps(rw: Tensor, image_size: tuple[int, int]) -> Tensor:
    """The walked stride-4 maps (C, h, w) upsampled x4 (bilinear), cropped to image_size and divided by their
    common maximum: what the background score competes with."""
    h, w = image_size
    up = F.interpolate(rw.double()[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, :h, :w]
    if up.numel():
        up = up / up.max().clamp_min(1e-12)  # an all-zero walk (no CAM mass) leaves everything background
    return up
