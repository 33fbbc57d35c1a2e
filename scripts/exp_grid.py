"""Run a grid of DVC experiments and collect their metrics: the machinery of the study scripts.

Each recipe is a name and a set of params overrides; each runs once per seed as
    dvc exp run -n <name>-s<seed> -S seed=<seed> -S key=value ... <targets>
in the repository the script is run from, each starting from the committed params.yaml (only the stages up to the
targets whose inputs changed rerun; the others come from the workspace or DVC's run cache). Experiments that
already exist (same name) are not run again, so an interrupted study resumes where it stopped. The metrics come
back through `dvc exp show --json`.

`check_commands` runs nothing: it applies each command's `-S` overrides to a copy of params.yaml with DVC's own
code (a key params.yaml lacks is refused, as `dvc exp run` refuses it), validates the result against the params
schema and checks the targets are stages of dvc.yaml; the study scripts' `--quick` calls it.

    python scripts/exp_grid.py --quick      checks the machinery on two commands (one valid, one with a typo)
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
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


class RecipeError(ValueError):
    """A study row whose command `dvc exp run` would refuse or whose params would not validate."""


def check_commands(recipes: list[Recipe], seeds: list[int], targets: list[str], root: Path = ROOT) -> int:
    """Checks the command of every (recipe, seed) as run_grid would run it, without running it; raises
    RecipeError naming each bad row and why. Returns how many commands were checked."""
    import yaml
    from dvc.utils.hydra import apply_overrides

    from textwsss.params import ParamsError, load_params

    stages = set((yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages", {}))
    problems, checked = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in recipes:
            for seed in recipe.seeds if recipe.seeds is not None else seeds:
                row_targets = recipe.targets if recipe.targets is not None else targets
                cmd = recipe.command(seed, row_targets)
                name = cmd[cmd.index("-n") + 1]
                overrides = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-S"]
                unknown = [t for t in row_targets if t not in stages]
                if unknown:
                    problems.append(f"{name}: targets {unknown} are not stages of dvc.yaml ({sorted(stages)})")
                params = Path(tmp) / f"{name}.yaml"
                shutil.copy(root / "params.yaml", params)
                try:
                    apply_overrides(params, overrides)
                    load_params(params)
                except ParamsError as err:
                    problems.append(f"{name}: {err}")
                except Exception as err:  # DVC's InvalidArgumentError; the reason is hydra's, in its cause
                    problems.append(f"{name}: `dvc exp run` would refuse {overrides}: {err.__cause__ or err}")
                checked += 1
    if problems:
        raise RecipeError(f"{len(problems)} of {checked} study command(s) would fail:\n  " + "\n  ".join(problems))
    return checked


def quick_check(recipes: list[Recipe], seeds: list[int], targets: list[str]) -> None:
    """A study's --quick: every command checked (check_commands); prints the summary line."""
    n = check_commands(recipes, seeds, targets)
    print(f"quick check: {n} study commands valid against params.yaml and dvc.yaml (nothing run)")


def metric(exp: dict, file: str, *keys: str):
    value = exp["metrics"].get(file, {})
    for k in keys:
        if not isinstance(value, dict) or k not in value:
            return None
        value = value[k]
    return value


def main_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", required=True,
                        help="check a valid command passes and one with an unknown key is refused")
    parser.parse_args()
    main_logging()
    good = Recipe("quick", {"train_seg.epochs": 1, "eval_seg.scales": [1.0, 0.5], "pseudo_labels.mode": "none"})
    check_commands([good], [0], ["eval_seg"])
    try:
        check_commands([Recipe("typo", {"train_seg.epoch": 1})], [0], ["eval_seg"])
    except RecipeError as err:
        log.info("refused as expected: %s", err)
    else:
        raise SystemExit("exp_grid: a command with the unknown key train_seg.epoch was not refused")
    print("quick check: exp_grid builds valid commands and refuses an unknown key")


if __name__ == "__main__":
    main()
