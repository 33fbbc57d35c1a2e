"""A copy of the project in a temporary git + DVC repository, on a synthetic VOC root with tiny settings,
for tests that run the real `dvc` command."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "data": {"workers": 0},
    "train_cam_baseline": {"epochs": 1, "batch_size": 4, "resize_long": [64, 64], "crop_size": 64},
    "train_cam": {"epochs": 1, "batch_size": 4, "resize_long": [64, 64], "crop_size": 64},
    "make_cam": {"scales": [1.0, 0.5], "max_side": 0},
    "eval_cam": {"figures": 1},
    "pseudo_labels": {"workers": 1, "crf": {"iterations": 2}},
    "train_irn": {"epochs": 1, "batch_size": 4, "crop_size": 64, "scale_range": [1.0, 1.0]},
    "random_walk": {"workers": 1, "max_side": 0, "exp_times": 4},
    "train_seg": {"epochs": 1, "batch_size": 4, "crop_size": 64, "scale_range": [1.0, 1.0]},
    "eval_seg": {"figures": 1},
    "zeroshot": {"max_side": 0},
    "tas": {"min_area": 30, "max_masks": 8, "max_side": 0, "captioner": False},
}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def make_project(tmp: Path, overrides: dict | None = None) -> Path:
    """tmp/project: the repository's code and DAG, tmp/voc: 8 train + 4 val synthetic scenes."""
    from textwsss.synthetic import write_voc_root

    write_voc_root(tmp / "voc", train=8, val=4, seed=0, size=64, num_classes=3)
    project = tmp / "project"
    for item in ("stages", "src", "dvc.yaml", "pyproject.toml"):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, project / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(src, project / item)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = _merge(params, TINY)
    params["data"]["root"] = str(tmp / "voc")
    params = _merge(params, overrides or {})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / ".gitignore").write_text("/data/\n")
    run(project, "git", "init", "-q")
    run(project, "git", "config", "user.email", "test@example.com")
    run(project, "git", "config", "user.name", "test")
    run(project, "dvc", "init", "-q")
    run(project, "dvc", "config", "core.analytics", "false")
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "init")
    return project


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e["OMP_NUM_THREADS"] = e.get("OMP_NUM_THREADS", "2")
    e.pop("TEXTWSSS_PARAMS", None)
    return e


def run(project: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=project, env=env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def stages_run(output: str) -> list[str]:
    """Names of the stages `dvc repro` executed (not those it skipped or restored)."""
    names = []
    for line in output.splitlines():
        if line.startswith("Running stage '"):
            names.append(line.split("'")[1])
    return names


def set_param(project: Path, dotted: str, value) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    node = params
    *path, last = dotted.split(".")
    for key in path:
        node = node[key]
    node[last] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
