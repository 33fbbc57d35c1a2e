"""Run a grid of DVC experiments and collect their metrics: the machinery of the study scripts.

Each recipe is a name and a set of params overrides; each runs once per seed as
    dvc exp run -n <name>-s<seed> -S seed=<seed> -S key=value ... <targets>
in the repository the script is run from, each starting from the committed params.yaml (only the stages up to the
targets whose inputs changed rerun; the others come from the workspace or DVC's run cache). Experiments that already exist (same name) are not run again, so an
interrupted study resumes where it stopped. The metrics come back through `dvc exp show --json`.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("exp_grid")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Recipe:
    name: str
    overrides: dict = field(default_factory=dict)
    note: str = ""
    seeds: list[int] | None = None  # None: the study's seeds
    targets: list[str] | None = None  # None: the study's stages

    def command(self, seed: int, targets: list[str]) -> list[str]:
        cmd = ["dvc", "exp", "run", "-n", f"{self.name}-s{seed}", "-S", f"seed={seed}"]
        for key, value in self.overrides.items():
            cmd += ["-S", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
        return cmd + list(targets)


def _dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["dvc", *args], cwd=ROOT, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def experiments() -> dict[str, dict]:
    """{experiment name: {"params": ..., "metrics": {file: data}}} of every experiment DVC knows here."""
    shown = json.loads(_dvc("exp", "show", "--json", "--all-commits").stdout)  # of every baseline commit
    out = {}
    for rev in shown:
        for exp in rev.get("experiments") or []:
            entry = exp["revs"][0]
            data = entry.get("data") or {}
            name = entry.get("name") or exp.get("name")
            if not name or entry.get("error"):
                continue
            metrics = {f: (m or {}).get("data", {}) for f, m in (data.get("metrics") or {}).items()}
            out[name] = {"params": (data.get("params") or {}).get("params.yaml", {}).get("data", {}),
                         "metrics": metrics}
    return out


def run_grid(recipes: list[Recipe], seeds: list[int], targets: list[str], dry_run: bool = False) -> None:
    done = set(experiments()) if not dry_run else set()
    for recipe in recipes:
        for seed in recipe.seeds if recipe.seeds is not None else seeds:
            name = f"{recipe.name}-s{seed}"
            cmd = recipe.command(seed, recipe.targets if recipe.targets is not None else targets)
            if name in done:
                log.info("%s: done before, kept", name)
                continue
            log.info("%s", " ".join(cmd))
            if dry_run:
                continue
            # a workspace experiment leaves its params in params.yaml: every run starts from the committed ones
            subprocess.run(["git", "checkout", "HEAD", "--", "params.yaml"], cwd=ROOT, check=True)
            start = time.perf_counter()
            result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if result.returncode != 0:
                log.error("%s failed:\n%s", name, (result.stdout + result.stderr)[-4000:])
                continue
            log.info("%s: %.0f s", name, time.perf_counter() - start)


def metric(exp: dict, file: str, *keys: str):
    value = exp["metrics"].get(file, {})
    for k in keys:
        if not isinstance(value, dict) or k not in value:
            return None
        value = value[k]
    return value


def main_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
