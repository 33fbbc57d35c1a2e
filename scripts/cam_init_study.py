"""Where the CLIMS CAM network starts, and how its losses are reduced: CAM and pseudo-label mIoU over seeds.

    python scripts/cam_init_study.py [--seeds 0 1 2] [--dry-run] [--quick]

Runs every recipe below as DVC experiments up to eval_cam and pseudo_labels (scripts/exp_grid.py) and writes
reports/studies/cam_init.md (and .json): per recipe, CAM mIoU and pseudo-label mIoU (train split) of every seed,
their mean and spread (max - min). Rerunning it skips the experiments that exist already. --quick runs nothing:
it checks every row's command against params.yaml and dvc.yaml (exp_grid.check_commands) and prints the table
with no experiment found (every cell '-').
"""
from __future__ import annotations

import argparse
import json
import statistics

from exp_grid import ROOT, Recipe, experiments, main_logging, metric, quick_check, run_grid

RECIPES = [
    Recipe("cam-baseline-only", {"train_cam.loss": "bce", "cam.init": "imagenet"},
           "the BCE baseline alone (what train_cam_baseline trains)"),
    Recipe("cam-clims-imagenet-perimage", {"cam.init": "imagenet", "clims.reduction": "per_image"},
           "CLIMS from ImageNet, per-image reduction (the earlier default)"),
    Recipe("cam-clims-imagenet-official", {"cam.init": "imagenet", "clims.reduction": "official"},
           "CLIMS from ImageNet, official reduction", seeds=[0]),
    Recipe("cam-clims-baseline-official", {"cam.init": "baseline", "clims.reduction": "official"},
           "CLIMS fine-tuning the baseline, official reduction"),
    Recipe("cam-clims-baseline-official-input", {"cam.init": "baseline", "clims.reduction": "official",
                                                 "clims.input_mode": "official"},
           "the same with the official matcher input (ImageNet-normalised image x map)"),
    Recipe("cam-clims-baseline-official-input-lr2.5e-4", {"cam.init": "baseline", "clims.reduction": "official",
                                                          "clims.input_mode": "official", "train_cam.lr": 0.00025},
           "the same at the official fine-tuning rate 2.5e-4 (head x10)", seeds=[0]),
]
FILES = {"cam": "reports/metrics/cam.json", "pseudo": "reports/metrics/pseudo_labels.json"}
TARGETS = ["eval_cam", "pseudo_labels"]


def table(seeds: list[int], exps: dict | None = None) -> tuple[str, list[dict]]:
    """The markdown table and its rows from the experiments (default: every one DVC knows here)."""
    exps = experiments() if exps is None else exps
    rows, lines = [], ["| recipe | CAM mIoU per seed | mean (spread) | pseudo-label mIoU per seed | mean (spread) |",
                       "|---|---|---|---|---|"]
    for r in RECIPES:
        found = {s: exps.get(f"{r.name}-s{s}") for s in (r.seeds if r.seeds is not None else seeds)}
        cam = [metric(e, FILES["cam"], "miou") if e else None for e in found.values()]
        pseudo = [metric(e, FILES["pseudo"], "miou") if e else None for e in found.values()]
        row = {"recipe": r.name, "note": r.note, "overrides": r.overrides, "seeds": list(found), "cam": cam,
               "pseudo": pseudo}
        rows.append(row)

        def cell(values):
            have = [v for v in values if v is not None]
            per = " / ".join("-" if v is None else f"{v:.1f}" for v in values)
            if not have:
                return per, "-"
            return per, f"{statistics.mean(have):.1f} ({max(have) - min(have):.1f})"

        c, p = cell(cam), cell(pseudo)
        lines.append(f"| {r.name}: {r.note} | {c[0]} | {c[1]} | {p[0]} | {p[1]} |")
    return "\n".join(lines), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--quick", action="store_true", help="check every command, print the empty table")
    args = parser.parse_args()
    main_logging()
    if args.quick:
        quick_check(RECIPES, args.seeds, TARGETS)
        print(table(args.seeds, exps={})[0])
        return
    run_grid(RECIPES, args.seeds, TARGETS, dry_run=args.dry_run)
    if args.dry_run:
        return
    text, rows = table(args.seeds)
    out = ROOT / "reports" / "studies"
    out.mkdir(parents=True, exist_ok=True)
    commands = "\n".join(" ".join(r.command(s, TARGETS)) for r in RECIPES
                          for s in (r.seeds if r.seeds is not None else args.seeds))
    (out / "cam_init.md").write_text(f"# CAM initialisation and CLIMS reduction (voc-mini, train split)\n\n{text}\n\n"
                                     f"Commands:\n```\n{commands}\n```\n")
    (out / "cam_init.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
