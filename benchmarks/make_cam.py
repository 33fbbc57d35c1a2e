"""Throughput of multi-scale CAM inference: the make_cam stage's path vs the plain loop.

Both run the same CAM network (EfficientNet-Lite0, ImageNet weights, output stride 16, 20 classes)
on the same N voc-mini train images, downscaled so the long side is --max-side:
- reference: textwsss.cam.reference_cam, the plain loop: one forward pass per image, scale and flip, the
  network in PyTorch's default (NCHW) layout;
- batched: what the make_cam stage runs: textwsss.cam.multiscale_cams over same-size batches from
  textwsss.cam.group_by_size (one forward pass per scale, flips in the same pass, passes capped at
  --max-pixels input pixels as params make_cam.max_pixels), the network prepared as the stage prepares it
  (textwsss.models.runtime.for_inference: channels-last, BatchNorm folded into the convolutions);
- informative: the plain loop on that prepared network, to split the gain between preparation and batching.
Checks that the CAMs agree (max abs difference < 1e-4) and prints images/s of each and the ratios.

--max-pixels: big scales are cache-bound on a CPU, so batching them hurts while small scales still gain.

    python benchmarks/make_cam.py [--n 16] [--max-side 320] [--batch-size 4] [--threads 2] [--max-pixels 150000]
                                  [--root ../shared/voc-mini] [--quick]
"""
from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from _timing import best_time
from _voc import voc_root, voc_subset

from textwsss.cam import group_by_size, multiscale_cams, reference_cam
from textwsss.data.images import working_size
from textwsss.data.transforms import to_tensor

log = logging.getLogger(__name__)
TOLERANCE = 1e-4
TARGET_RATIO = 1.5


def load_images(root: Path, n: int, max_side: int) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """The first n train images (float (3,H,W) in [0,1], long side <= max_side) and their classes."""
    data = voc_subset(root, "train", n)
    images = {}
    for i in data.ids("train"):
        x = to_tensor(data.read_image(i))
        size = working_size(x.shape[1], x.shape[2], max_side)
        if size != tuple(x.shape[1:]):
            x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
        images[i] = x
    return images, dict(data.labels)


def run_batched(model: torch.nn.Module, images: dict[str, torch.Tensor], keys: dict[str, list[int]],
                scales: Sequence[float], flip: bool, batch_size: int, max_pixels: int) -> dict[str, torch.Tensor]:
    batches = group_by_size({i: tuple(x.shape[1:]) for i, x in images.items()}, batch_size)
    cams = {}
    for ids in batches:
        out = multiscale_cams(model, torch.stack([images[i] for i in ids]), [keys[i] for i in ids], scales, flip,
                              max_pixels)
        cams.update(zip(ids, out))
    return cams


def run_reference(model: torch.nn.Module, images: dict[str, torch.Tensor], keys: dict[str, list[int]],
                  scales: Sequence[float], flip: bool) -> dict[str, torch.Tensor]:
    return {i: reference_cam(model, x, keys[i], scales, flip) for i, x in images.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="VOC-layout data root (default ../shared/voc-mini)")
    parser.add_argument("--n", type=int, default=16, help="number of train images")
    parser.add_argument("--max-side", type=int, default=320, help="images downscaled to this long side")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 1.5, 2.0])
    parser.add_argument("--no-flip", action="store_true", help="skip the horizontal flips")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per path; the fastest counts")
    parser.add_argument("--max-pixels", type=int, default=150_000,
                        help="batched path: input pixels per forward pass (0: no cap), as make_cam.max_pixels")
    parser.add_argument("--quick", action="store_true",
                        help="2 images at 96 px, scales 1 and 0.5, 1 thread: checks it runs (the ratio means little)")
    args = parser.parse_args()
    if args.quick:  # one thread: on a loaded machine two spinning OpenMP threads stall each other
        args.n, args.max_side, args.scales, args.repeats, args.threads = 2, 96, [1.0, 0.5], 1, 1
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = voc_root(args.root)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from textwsss.models.factory import build_cam_net

    from textwsss.models.runtime import for_inference, image_probe

    model = build_cam_net(backbone="efficientnet_lite0", pretrained="imagenet", output_stride=16,
                          num_classes=20).eval()
    plain = copy.deepcopy(model)
    model = for_inference(model, "cpu", probe=image_probe("cpu"))  # as the make_cam stage does (textwsss.pipeline.make_cam)
    images, keys = load_images(root, args.n, args.max_side)
    flip = not args.no_flip
    sizes = {tuple(x.shape[1:]) for x in images.values()}
    n_batches = len(group_by_size({i: tuple(x.shape[1:]) for i, x in images.items()}, args.batch_size))
    log.info("%d images, %d distinct sizes -> %d batches of <= %d; scales %s, flip %s, %d threads, max_pixels %d",
             len(images), len(sizes), n_batches, args.batch_size, args.scales, flip, args.threads, args.max_pixels)

    first = next(iter(images))
    for net in (plain, model):
        reference_cam(net, images[first], keys[first], [1.0], False)  # warm-up (allocator, kernels)
    ref, t_ref = best_time(lambda: run_reference(plain, images, keys, args.scales, flip), args.repeats)
    nhwc, t_nhwc = best_time(lambda: run_reference(model, images, keys, args.scales, flip), args.repeats)
    bat, t_bat = best_time(lambda: run_batched(model, images, keys, args.scales, flip, args.batch_size,
                                               args.max_pixels), args.repeats)

    n = len(images)
    failed = False
    for name, cams, seconds in [("reference: plain loop, NCHW", ref, t_ref), ("  plain loop, prepared network", nhwc, t_nhwc),
                                ("batched (stage)", bat, t_bat)]:
        diff = max((float((cams[i] - ref[i]).abs().max()) if ref[i].numel() else 0.0) for i in images)
        failed |= diff >= TOLERANCE
        print(f"{name:32s} {n / seconds:.3f} images/s ({seconds:.2f} s), {t_ref / seconds:.2f}x reference; "
              f"max abs diff {diff:.1e} {'OK' if diff < TOLERANCE else 'MISMATCH'}")
    print(f"speed-up batched (stage) vs reference: {t_ref / t_bat:.2f}x (target >= {TARGET_RATIO}x); "
          f"batching alone (same network): {t_nhwc / t_bat:.2f}x")
    if failed:
        raise SystemExit(f"CAMs differ from the reference by >= {TOLERANCE}")


if __name__ == "__main__":
    main()
