"""Scale: prepare -> make_cam -> pseudo_labels over 10,582 generated images (VOC train_aug's size), with a tiny CAM
model, as DVC runs them in a real project. Prints images/s and peak RSS of each stage at 1,000 and at 10,582
images (memory must stay flat: every stage streams), then kills make_cam with SIGKILL in the middle of a run,
lets `dvc repro` finish it, and checks that every CAM file has the md5 of an uninterrupted run.

    python benchmarks/scale.py [--images 10582] [--small 1000] [--workdir TMPDIR/textwsss-scale] [--keep]
    python benchmarks/scale.py --quick     12 images, one project, the prepare stage only (checks it runs)

Images are synthetic scenes (textwsss.synthetic) of 128 x 96 pixels; the CAM network is EfficientNet-Lite0 with
random weights trained one epoch on tiny crops (its quality does not matter here, its cost per pixel does).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from textwsss.io import save_label_png  # noqa: E402
from textwsss.synthetic import make_scene  # noqa: E402

SETTINGS = {
    "cam": {"init": "imagenet", "pretrained": "none"},
    "train_cam_baseline": {"epochs": 1, "batch_size": 32, "resize_long": [48, 48], "crop_size": 48},
    "train_cam": {"loss": "bce", "epochs": 1, "batch_size": 32, "resize_long": [48, 48], "crop_size": 48},
    "make_cam": {"scales": [1.0, 0.5], "max_side": 0, "batch_size": 8},
    "pseudo_labels": {"workers": 0},
}


def write_dataset(root: Path, n: int, small: int, seed: int = 0) -> None:
    """A VOC-layout folder of n scenes (128 x 96), split lists 'train' (all), 'train_small' (the first `small`)
    and 'val' (8 more)."""
    rng = np.random.default_rng(seed)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClass").mkdir(exist_ok=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    ids = [f"scene_{i:05d}" for i in range(n + 8)]
    for i in ids:
        if (root / "SegmentationClass" / f"{i}.png").is_file():
            continue
        scene = make_scene(rng, size=128, num_classes=20, max_objects=2)
        Image.fromarray(scene.image[16:112]).save(root / "JPEGImages" / f"{i}.jpg", quality=90)
        save_label_png(root / "SegmentationClass" / f"{i}.png", scene.mask[16:112])
    lists = root / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(ids[:n]) + "\n")
    (lists / "train_small.txt").write_text("\n".join(ids[:small]) + "\n")
    (lists / "val.txt").write_text("\n".join(ids[n:]) + "\n")


def make_project(path: Path, data_root: Path, train_split: str) -> Path:
    if path.exists():
        shutil.rmtree(path)
    for item in ("stages", "src", "dvc.yaml"):
        src = ROOT / item
        (shutil.copytree(src, path / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
         if src.is_dir() else shutil.copy(src, path / item))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in SETTINGS.items():
        params[section].update(values)
    params["data"].update({"root": str(data_root), "train_split": train_split})
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (path / ".gitignore").write_text("/data/\n")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "b@x"], ["git", "config", "user.name", "b"],
                ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=path, check=True, env=_env())
    return path


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


STAGES = ("prepare", "train_cam_baseline", "train_cam", "make_cam", "pseudo_labels")


def measure(project: Path, n: int, stages: tuple[str, ...] = STAGES) -> dict[str, tuple[float, float]]:
    """{stage: (wall seconds, peak RSS MB)} of `dvc repro -s <stage>` (the stage alone, as DVC runs it, output
    caching included), the peak being the largest process of the run."""
    rows = {}
    for stage in stages:
        wrapped = ["/usr/bin/time", "-f", "%M %e", "dvc", "repro", "-s", stage]
        result = subprocess.run(wrapped, cwd=project, env=_env(), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{stage} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
        peak_kb, wall = result.stderr.strip().splitlines()[-1].split()
        rows[stage] = (float(wall), int(peak_kb) / 1024)
        print(f"  {n:>6} images  {stage:<19} {float(wall):7.1f} s  {n / float(wall):8.1f} img/s  "
              f"peak RSS {int(peak_kb) / 1024:7.0f} MB", flush=True)
    return rows


def md5_tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def kill_and_resume(project: Path, n: int) -> None:
    cams = project / "data" / "cams"
    reference = md5_tree(cams)
    shutil.rmtree(cams)
    proc = subprocess.Popen(["dvc", "repro", "-s", "make_cam"], cwd=project, env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and (not cams.exists() or sum(1 for _ in cams.glob("*.npz")) < n // 3):
        time.sleep(0.2)
    written = sum(1 for _ in cams.glob("*.npz")) if cams.exists() else 0
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    print(f"  make_cam killed (SIGKILL) with {written} of {n} CAM files written", flush=True)
    start = time.perf_counter()
    result = subprocess.run(["dvc", "repro", "-s", "make_cam"], cwd=project, env=_env(), capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-3000:] + result.stderr[-3000:])
    resumed = "resuming" in result.stdout + result.stderr
    print(f"  dvc repro make_cam after the kill: {time.perf_counter() - start:.1f} s, resumed: {resumed}", flush=True)
    after = md5_tree(cams)
    same = after == reference
    print(f"  {len(after)} files, md5 identical to the uninterrupted run: {same}", flush=True)
    if not same:
        raise SystemExit("outputs differ after the resumed run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10582)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "textwsss-scale")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--quick", action="store_true", help="12 images, prepare only, in a fresh temporary folder")
    args = parser.parse_args()
    if args.quick:
        quick()
        return
    data = args.workdir / "data"
    start = time.perf_counter()
    write_dataset(data, args.images, args.small)
    print(f"dataset: {args.images} + 8 images written to {data} in {time.perf_counter() - start:.0f} s", flush=True)
    table = {}
    for split, n in (("train_small", args.small), ("train", args.images)):
        project = make_project(args.workdir / f"project_{n}", data, split)
        print(f"project with {n} train images: {project}", flush=True)
        table[n] = measure(project, n)
    print("\nstage             " + "".join(f"  {n:>6} images: img/s, peak RSS" for n in table))
    for stage in ("prepare", "make_cam", "pseudo_labels"):
        print(f"{stage:<18}" + "".join(f"  {n / table[n][stage][0]:>14.1f} {table[n][stage][1]:>9.0f} MB" for n in table))
    kill_and_resume(args.workdir / f"project_{args.images}", args.images)
    if not args.keep:
        shutil.rmtree(args.workdir)


def quick() -> None:
    """The same dataset writer, project set-up and measurement on 12 images, for the prepare stage alone."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_dataset(work / "data", 12, 6)
        project = make_project(work / "project", work / "data", "train_small")
        rows = measure(project, 6, ("prepare",))
    wall, peak = rows["prepare"]
    print(f"quick check: prepare on 6 generated images through dvc repro: {6 / wall:.1f} img/s, "
          f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
