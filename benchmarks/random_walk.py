"""IRN's random walk: the project's sparse form against the dense matrix-power reference (the official form).

Generated inputs the size of a voc-mini image at stride 4 (a 500 x 375 image: 94 x 125 = 11750 pixels):
objects of two classes, a boundary map along their outlines, CAMs that cover them partly. Both forms walk the
same CAMs (radius 5, beta 10, exp_times 8, as IRN) to full-resolution scores and labels; the script checks the
labels on every pixel and the scores to 1e-4, and prints the times and their ratio on one "speed-up" line.

    python benchmarks/random_walk.py [--height 94] [--width 125] [--classes 2] [--dense-dtype float64] [--quick]

The dense reference squares an n x n matrix exp_times times: at the default size 8 x 3.2 TFLOP, many minutes
on 2 cores (run it with nice on a shared machine).
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import time

import numpy as np
import torch
from scipy import ndimage

from textwsss.irn.random_walk import labels_from_scores, walk_scores

log = logging.getLogger("benchmarks.random_walk")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def generated_inputs(height: int, width: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(CAMs (classes, h, w), boundary (h, w)) at stride 4: ellipses of each class; the boundary is high along
    their outlines (blurred, with noise), each CAM peaks on part of its objects and fades elsewhere."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    regions = np.zeros((height, width), np.int64)
    for c in range(1, classes + 1):
        for _ in range(2):
            cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
            ry, rx = rng.uniform(0.1, 0.3) * height, rng.uniform(0.1, 0.3) * width
            regions[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = c
    outline = np.zeros((height, width), bool)
    outline[:, 1:] |= regions[:, 1:] != regions[:, :-1]
    outline[1:] |= regions[1:] != regions[:-1]
    boundary = ndimage.gaussian_filter(outline.astype(np.float64), 1.0)
    boundary = np.clip(boundary / max(boundary.max(), 1e-9) + rng.normal(0, 0.05, boundary.shape), 0, 1)
    cams = []
    for c in range(1, classes + 1):
        inside = regions == c
        peak = ndimage.gaussian_filter(inside * rng.uniform(0.2, 1.0, inside.shape), 4)
        cams.append(np.clip(peak / max(peak.max(), 1e-9), 0, 1) ** 2)  # peaky: the walk must fill the rest
    return torch.from_numpy(np.stack(cams)).float(), torch.from_numpy(boundary).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=94, help="stride-4 map height (375 / 4)")
    parser.add_argument("--width", type=int, default=125, help="stride-4 map width (500 / 4)")
    parser.add_argument("--classes", type=int, default=2, help="labelled classes of the image")
    parser.add_argument("--exp-times", type=int, default=8, help="the walk runs 2^exp_times steps")
    parser.add_argument("--beta", type=float, default=10.0)
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--bg-threshold", type=float, default=0.25)
    # float32 (the official code's precision) loses about 2^exp_times float32 epsilons to the squarings: 4e-5
    # on the scores at 480 pixels already, enough to flip labels where two scores nearly tie
    parser.add_argument("--dense-dtype", default="float64", choices=("float32", "float64"),
                        help="the reference's matrix precision (the official code's: float32)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the fast form (best time kept)")
    parser.add_argument("--quick", action="store_true", help="a 20 x 24 map: checks it runs, in seconds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.quick:
        args.height, args.width, args.repeats = 20, 24, 1
    if args.height < 1 or args.width < 1 or args.classes < 1:
        raise SystemExit("--height, --width and --classes must be >= 1")

    cams, boundary = generated_inputs(args.height, args.width, args.classes)
    keys = list(range(1, args.classes + 1))
    size = (4 * args.height, 4 * args.width)
    walk = dict(bg_threshold=args.bg_threshold, beta=args.beta, exp_times=args.exp_times, radius=args.radius)

    fast_seconds, fast_cpu, fast = float("inf"), 0.0, None
    for _ in range(max(1, args.repeats)):
        start, cpu = time.perf_counter(), _cpu_seconds()
        fast = walk_scores(cams, boundary, size, **walk)
        if time.perf_counter() - start < fast_seconds:
            fast_seconds, fast_cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    start, cpu = time.perf_counter(), _cpu_seconds()
    dense = walk_scores(cams, boundary, size, dense=True, dense_dtype=getattr(torch, args.dense_dtype), **walk)
    dense_seconds, dense_cpu = time.perf_counter() - start, _cpu_seconds() - cpu

    same = labels_from_scores(fast, keys) == labels_from_scores(dense, keys)
    diff = float((fast - dense).abs().max())
    labelled = float((labels_from_scores(fast, keys) > 0).mean())
    load = os.getloadavg()
    print(f"stride-4 map {args.height} x {args.width} ({args.height * args.width} pixels), {args.classes} classes, "
          f"radius {args.radius}, beta {args.beta:g}, {2 ** args.exp_times} steps; torch threads "
          f"{torch.get_num_threads()}, load avg {load[0]:.2f}")
    print(f"fast (sparse, float64): {fast_seconds:8.2f} s (cpu {fast_cpu:.2f} s); dense reference "
          f"({args.dense_dtype}): {dense_seconds:8.2f} s (cpu {dense_cpu:.2f} s)")
    print(f"labels identical on {100 * same.mean():.4f}% of {same.size} pixels ({100 * labelled:.1f}% objects); "
          f"max |score difference| {diff:.2e} (tolerance 1e-4)")
    print(f"speed-up fast vs dense: {dense_seconds / fast_seconds:.1f}x (target >= 10x)")
    if not same.all() or diff > 1e-4:
        raise SystemExit("the fast walk differs from the dense reference")


if __name__ == "__main__":
    main()
