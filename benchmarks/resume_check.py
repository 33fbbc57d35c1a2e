"""What the manifest of a resumable folder (pipeline/resumable.py) costs: N CAM files of the scale benchmark's size
(128 x 96, two classes, float16, compressed) written and then checked on resume, by the folder as it is now
(atomic write + md5 of the bytes in memory + a journal line, the manifest at finish; on resume every file's size
and md5 checked) and by the old behaviour it replaces (atomic write only; on resume the files only counted).
Prints the time per file of each, the cost of the manifest's part of a write alone (md5, journal line, manifest:
the difference of two whole-write timings drowns in file-system noise on a shared machine), and that cost beside
make_cam's and pseudo_labels' own time per image at 10,582 images (64.9 and 44.3 images/s on the 2-core AMD EPYC
of the README) as a speed-up ratio. pseudo_labels also hashes each CAM file it reads (about the "check" column).

    python benchmarks/resume_check.py [--files 2000] [--repeats 3] [--quick]

--quick: 50 files, 1 repeat (checks it runs; the ratio means little there).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from textwsss.io import write_bytes  # noqa: E402
from textwsss.pipeline.make_cam import cam_bytes  # noqa: E402
from textwsss.pipeline.resumable import ResumableFolder  # noqa: E402

#: make_cam and pseudo_labels at 10,582 images (benchmarks/scale.py, README): seconds per image
STAGE_SECONDS = {"make_cam": 1 / 64.9, "pseudo_labels": 1 / 44.3}


def files(n: int) -> list[bytes]:
    """n distinct CAM files: smooth blobs as a CAM network gives, so they compress as real ones do."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:128] / 96.0
    out = []
    for _ in range(n):
        cy, cx, s = rng.uniform(0.2, 0.8), rng.uniform(0.2, 1.1), rng.uniform(0.05, 0.2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / s)
        out.append(cam_bytes(np.stack([blob, blob[::-1]]), [3, 14]))
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_once(work: Path, data: list[bytes]) -> dict:
    ids = [f"img_{i:06d}" for i in range(len(data))]
    old, new = work / "old", work / "new"

    def write_old():
        for i, d in zip(ids, data):
            write_bytes(old / f"{i}.npz", d)

    def write_new():
        out = ResumableFolder(new, {"bench": 1}, ".npz")
        out.open()
        for i, d in zip(ids, data):
            out.write(i, d)
        out.finish(ids)

    def check_old():
        # the old open(): the stamp matched, so the files were only counted
        assert sum(1 for _ in old.rglob("*.npz")) == len(ids)

    def check_new():
        assert ResumableFolder(new, {"bench": 1}, ".npz").open() == len(ids)

    def record_only():
        # what the manifest adds to a write, alone: the md5 of the bytes and the journal line (the atomic write
        # itself is the old behaviour's cost too); the time of the whole writes is noisy on a shared machine
        out = ResumableFolder(work / "records", {"bench": 1}, ".npz")
        out.open()
        for i, d in zip(ids, data):
            out.record(i, len(d), hashlib.md5(d).hexdigest())
        out._write_manifest()

    result = {"write old": timed(write_old), "write new": timed(write_new), "record only": timed(record_only),
              "check old": timed(check_old), "check new": timed(check_new)}
    for folder in (old, new, work / "records"):
        shutil.rmtree(folder)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, repeats = (50, 1) if args.quick else (args.files, args.repeats)
    logging.basicConfig(level=logging.WARNING)
    data = files(n)
    with tempfile.TemporaryDirectory(prefix="resume-check-") as tmp:
        runs = [run_once(Path(tmp), data) for _ in range(repeats)]
    best = {k: min(r[k] for r in runs) / n * 1e3 for k in runs[0]}  # ms per file, best of the repeats
    size = sum(map(len, data)) / n / 1024
    print(f"{n} CAM files of {size:.1f} KiB, best of {repeats}; ms per file:")
    print(f"| | old | with manifest | extra |")
    print(f"|---|---|---|---|")
    for what in ("write", "check"):
        o, w = best[f"{what} old"], best[f"{what} new"]
        print(f"| {what} | {o:.3f} | {w:.3f} | {w - o:+.3f} |")
    print(f"| md5 + journal line + manifest alone | | | {best['record only']:+.3f} |")
    extra = best["record only"]
    for stage, seconds in STAGE_SECONDS.items():
        per_image = seconds * 1e3
        print(f"{stage} at 10,582 images: {per_image:.1f} ms per image + {extra:.3f} ms of manifest -> "
              f"speed-up {per_image / (per_image + extra):.3f}x")
    print(f"manifest overhead: write speed-up {best['write old'] / best['write new']:.2f}x, resume check "
          f"speed-up {best['check old'] / best['check new']:.2f}x (the check reads and hashes every kept file)")


if __name__ == "__main__":
    main()
