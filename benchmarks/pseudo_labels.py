"""Serial vs parallel pseudo-label generation on real voc-mini train images.

CAMs are built from degraded ground truth (textwsss.pipeline.pseudo_labels.cams_from_mask) in a temporary
directory; the same ids are then labelled by the stage's generate_pseudo_labels with workers=1 and workers=N in
this process, the PNGs are compared byte for byte, and the throughput of each run and their ratio are printed.

    python benchmarks/pseudo_labels.py [--n 24] [--workers 2] [--mode irn] [--root ../shared/voc-mini] [--quick]
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

from _voc import voc_root, voc_subset

from textwsss.cam import cam_path, save_cam
from textwsss.pipeline.pseudo_labels import MODES, cams_from_mask, generate_pseudo_labels, score_pseudo_labels

log = logging.getLogger("benchmarks.pseudo_labels")


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children: shows the work itself, whatever else loads the machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="number of train images")
    parser.add_argument("--workers", type=int, default=2, help="processes of the parallel run")
    parser.add_argument("--mode", default="irn", choices=MODES)
    parser.add_argument("--root", type=Path, default=None, help="VOC-layout data root (default ../shared/voc-mini)")
    parser.add_argument("--quick", action="store_true", help="4 images: checks it runs")
    args = parser.parse_args()
    if args.quick:
        args.n = 4
    if args.workers < 2:
        parser.error(f"--workers: the parallel run needs >= 2 processes, got {args.workers}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    data = voc_subset(voc_root(args.root), "train", args.n)
    ids = data.ids("train")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for image_id in ids:
            cams, keys = cams_from_mask(data.read_mask(image_id), downscale=16, blur_sigma=6, shift=(4, 4))
            save_cam(cam_path(tmp / "cams", image_id), cams, keys)
        seconds, cpu = {}, {}
        for workers in (1, args.workers):
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            generate_pseudo_labels(data, ids, tmp / "cams", tmp / f"w{workers}", workers=workers, mode=args.mode)
            seconds[workers], cpu[workers] = time.perf_counter() - start, _cpu_seconds() - cpu_start
        identical = all((tmp / "w1" / f"{i}.png").read_bytes() == (tmp / f"w{args.workers}" / f"{i}.png").read_bytes()
                        for i in ids)
        scores = score_pseudo_labels(data, ids, tmp / "w1")
    load = os.getloadavg()
    print(f"mode {args.mode}, {len(ids)} images, cpu_count {os.cpu_count()}, load avg {load[0]:.2f} {load[1]:.2f}")
    print(f"serial   (workers=1): {seconds[1]:6.2f} s  {len(ids) / seconds[1]:6.2f} images/s  cpu {cpu[1]:6.2f} s")
    print(f"parallel (workers={args.workers}): {seconds[args.workers]:6.2f} s  "
          f"{len(ids) / seconds[args.workers]:6.2f} images/s  cpu {cpu[args.workers]:6.2f} s")
    print(f"pseudo-label mIoU {scores['miou']:.2f} (ignored {100 * scores['ignore_ratio']:.1f}% of pixels)")
    print(f"speed-up parallel vs serial: {seconds[1] / seconds[args.workers]:.2f}x (target >= 1.7x); "
          f"outputs identical: {identical}")
    if not identical:
        raise SystemExit("parallel output differs from serial output")


if __name__ == "__main__":
    main()
