"""Serial vs parallel pseudo-label generation on real voc-mini train images.

CAMs are built from degraded ground truth (textwsss.pseudo_labels.cams_from_mask) in a temporary
directory; the same ids are then labelled with workers=1 and workers=N in this process, the PNGs are
compared byte for byte, and the throughput of each run and their ratio are printed.

    python benchmarks/pseudo_labels.py [--n 24] [--workers 2] [--mode irn] [--root /work/shared/voc-mini]
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import tempfile
import time
from pathlib import Path

from textwsss.io import save_npz
from textwsss.pseudo_labels import cams_from_mask, generate_pseudo_labels, score_pseudo_labels
from textwsss.voc import mask_path, read_mask, read_split

log = logging.getLogger("benchmarks.pseudo_labels")
DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "voc-mini"


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children: shows the work itself, whatever else loads the machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="number of train images")
    parser.add_argument("--workers", type=int, default=2, help="processes of the parallel run")
    parser.add_argument("--mode", default="irn", choices=("irn", "prob", "none"))
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="VOC-layout data root")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)

    ids = read_split(args.root, "train")[: args.n]
    if not ids:
        raise ValueError(f"--n must be >= 1 and {args.root} must hold train images")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for image_id in ids:
            cams, keys = cams_from_mask(read_mask(mask_path(args.root, image_id)), downscale=16, blur_sigma=6,
                                        shift=(4, 4))
            save_npz(tmp / "cams" / f"{image_id}.npz", cams=cams, keys=keys)
        seconds, cpu = {}, {}
        for workers in (1, args.workers):
            start, cpu_start = time.perf_counter(), _cpu_seconds()
            generate_pseudo_labels(args.root, ids, tmp / "cams", tmp / f"w{workers}", workers=workers, mode=args.mode)
            seconds[workers], cpu[workers] = time.perf_counter() - start, _cpu_seconds() - cpu_start
        identical = all((tmp / "w1" / f"{i}.png").read_bytes() == (tmp / f"w{args.workers}" / f"{i}.png").read_bytes()
                        for i in ids)
        scores = score_pseudo_labels(args.root, ids, tmp / "w1")
    load = os.getloadavg()
    print(f"mode {args.mode}, {len(ids)} images, cpu_count {os.cpu_count()}, load avg {load[0]:.2f} {load[1]:.2f}")
    print(f"serial   (workers=1): {seconds[1]:6.2f} s  {len(ids) / seconds[1]:6.2f} images/s  cpu {cpu[1]:6.2f} s")
    print(f"parallel (workers={args.workers}): {seconds[args.workers]:6.2f} s  "
          f"{len(ids) / seconds[args.workers]:6.2f} images/s  cpu {cpu[args.workers]:6.2f} s")
    print(f"speed-up {seconds[1] / seconds[args.workers]:.2f}x; outputs identical: {identical}")
    print(f"pseudo-label mIoU {scores['miou']:.2f} (ignored {100 * scores['ignore_ratio']:.1f}% of pixels)")
    if not identical:
        raise SystemExit("parallel output differs from serial output")


if __name__ == "__main__":
    main()
