"""The segmentation stage's recipe on voc-mini: val mIoU against training minutes, on ground-truth masks and on
pseudo-labels, for the training budget, resolution, backbone, initialisation, learning rates and BatchNorm.

    python scripts/seg_recipe_study.py [--grid main|demo|eval] [--labels gt pseudo] [--seeds 0] [--rows ...]
                                       [--dry-run | --report | --quick]

Grids: `main` changes one thing of the recipe before this study (10 epochs of 256-crops from ImageNet); `demo`
changes one thing of the committed params.yaml (the demo's recipe, class gate included), so it says what would
move today's default; `eval` reruns only eval_seg with each evaluation option on the committed model.

Each recipe runs as DVC experiments up to eval_seg (scripts/exp_grid.py; upstream stages come from the workspace,
so run it from a repository whose `dvc repro` is done). Writes reports/studies/seg_recipe_<grid>.md/.json and a
plot of val mIoU against training minutes (.png). Training minutes are the train_seg stage's own wall time
(reports/train_seg/metrics.json "seconds"): run the study alone on the machine, one experiment at a time, and
name the CPU with the numbers (lscpu).

--quick runs nothing and writes nothing in reports/: it checks the command of every row of every grid against
params.yaml and dvc.yaml (exp_grid.check_commands), then rebuilds the committed study files' rows
(reports/studies/seg_recipe_<grid>.json) through the table code and plots them into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

from exp_grid import ROOT, Recipe, experiments, main_logging, metric, quick_check, run_grid

TRAIN_IMAGES = 148  # voc-mini's train split: steps per epoch = ceil(148 / batch)

# The recipe every row changes one thing of (the defaults before this study, written out so the rows stay
# comparable whatever params.yaml says).
BASE = {"seg.init": "imagenet", "seg.backbone": "efficientnet_lite0", "seg.aspp_channels": 128,
        "seg.decoder_channels": 96, "train_seg.epochs": 10, "train_seg.batch_size": 8, "train_seg.lr": 0.01,
        "train_seg.backbone_lr_mult": 0.1, "train_seg.crop_size": 256, "train_seg.scale_range": [0.5, 1.0],
        "train_seg.freeze_stages": 0, "train_seg.freeze_batchnorm": False, "train_seg.loss": "ce",
        "eval_seg.max_side": 0,
        "eval_seg.scales": [1.0], "eval_seg.flip": False, "eval_seg.postprocess_crf": False}
LOW_RES = {"train_seg.crop_size": 192, "train_seg.scale_range": [0.35, 0.7], "eval_seg.max_side": 320}


def _recipes(labels: str, rows: list[tuple[str, dict, str]], base: dict) -> list[Recipe]:
    return [Recipe(f"seg-{labels}-{name}", {**base, "seg.labels": labels, **over}, note) for name, over, note in rows]


GRIDS: dict[str, list[tuple[str, dict, str]]] = {
    "main": [
        ("base", {}, "before this study: 10 epochs, crop 256 at 0.5-1x, lr 0.01 (backbone 0.1x)"),
        ("e30", {"train_seg.epochs": 30}, "3x the epochs"),
        ("lowres", LOW_RES, "crop 192 at 0.35-0.7x, evaluated at long side 320"),
        ("lowres-e20", {**LOW_RES, "train_seg.epochs": 20}, "low resolution, 2x the epochs"),
        ("caminit", {"seg.init": "cam"}, "backbone from the CAM network"),
        ("frozenbn", {"train_seg.freeze_batchnorm": True}, "BatchNorm statistics and weights frozen"),
        ("bb1", {"train_seg.backbone_lr_mult": 1.0}, "backbone at the full learning rate"),
        ("lr03", {"train_seg.lr": 0.03}, "3x the learning rate"),
        ("lite2", {"seg.backbone": "efficientnet_lite2"}, "EfficientNet-Lite2 backbone"),
        ("balanced", {"train_seg.loss": "balanced_ce"}, "class-balanced cross-entropy"),
    ],
    # One change each from the committed params.yaml (the demo recipe: 20 epochs of 192-crops, backbone from the
    # CAM network, class gate). Lite1/Lite2 cannot start from the Lite0 CAM network: they pair with "imagenet".
    "demo": [
        ("default", {}, "the committed params.yaml"),
        ("bb1", {"train_seg.backbone_lr_mult": 1.0}, "backbone at the full learning rate"),
        ("lr03", {"train_seg.lr": 0.03}, "3x the learning rate"),
        ("frozenbn", {"train_seg.freeze_batchnorm": True}, "BatchNorm statistics and weights frozen"),
        ("balanced", {"train_seg.loss": "balanced_ce"}, "class-balanced cross-entropy"),
        ("imagenet", {"seg.init": "imagenet"}, "backbone from ImageNet instead of the CAM network"),
        ("lite1", {"seg.init": "imagenet", "seg.backbone": "efficientnet_lite1"},
         "EfficientNet-Lite1 from ImageNet"),
        ("lite2", {"seg.init": "imagenet", "seg.backbone": "efficientnet_lite2"},
         "EfficientNet-Lite2 from ImageNet"),
        ("e30", {"train_seg.epochs": 30}, "1.5x the epochs"),
    ],
    # Evaluation options on the model params.yaml trains (run after `dvc repro`: only eval_seg reruns).
    "eval": [
        ("eval-single", {"eval_seg.scales": [1.0], "eval_seg.flip": False, "eval_seg.postprocess_crf": False},
         "one scale, no flip, no CRF"),
        ("eval-flip", {"eval_seg.scales": [1.0], "eval_seg.flip": True, "eval_seg.postprocess_crf": False},
         "+ horizontal flip"),
        ("eval-ms-flip", {"eval_seg.scales": [0.75, 1.0, 1.25], "eval_seg.flip": True,
                          "eval_seg.postprocess_crf": False}, "scales 0.75 / 1 / 1.25 + flip"),
        ("eval-crf", {"eval_seg.scales": [1.0], "eval_seg.flip": False, "eval_seg.postprocess_crf": True},
         "+ dense CRF"),
        ("eval-ms-flip-crf", {"eval_seg.scales": [0.75, 1.0, 1.25], "eval_seg.flip": True,
                              "eval_seg.postprocess_crf": True}, "scales + flip + CRF"),
    ],
}
#: The params every row of a grid starts from: the pre-study recipe, or (eval) the repository's own params.
GRID_BASE = {"main": BASE, "demo": {}, "eval": {}}


def table(recipes: list[Recipe], seeds: list[int], exps: dict | None = None) -> tuple[str, list[dict]]:
    """The markdown table and its rows from the experiments (default: every one DVC knows here)."""
    from textwsss.params import load_params

    exps = experiments() if exps is None else exps
    committed = load_params(ROOT / "params.yaml").train_seg  # what a row without that override runs with
    lines = ["| recipe | labels | val mIoU per seed | mean (spread) | pixel acc | the network alone (no class gate): "
             "per seed, mean | train minutes | steps |",
             "|---|---|---|---|---|---|---|---|"]
    rows = []
    for r in recipes:
        found = [exps.get(f"{r.name}-s{s}") for s in seeds]
        miou = [metric(e, "reports/metrics/seg.json", "miou") if e else None for e in found]
        acc = [metric(e, "reports/metrics/seg.json", "pixel_acc") if e else None for e in found]
        alone = [metric(e, "reports/metrics/seg.json", "ungated", "miou") if e else None for e in found]
        secs = [metric(e, "reports/train_seg/metrics.json", "seconds") if e else None for e in found]
        o = r.overrides
        epochs = o.get("train_seg.epochs", committed.epochs)
        batch = o.get("train_seg.batch_size", committed.batch_size)
        steps = epochs * math.ceil(TRAIN_IMAGES / batch) if epochs and batch else None
        have = [v for v in miou if v is not None]
        minutes = statistics.mean([s for s in secs if s is not None]) / 60 if any(secs) else None
        rows.append({"recipe": r.name, "note": r.note, "overrides": o, "seeds": seeds, "miou": miou,
                     "miou_alone": alone, "pixel_acc": acc, "seconds": secs, "steps": steps, "minutes": minutes})
        spread = f"{max(have) - min(have):.1f}" if len(have) > 1 else "1 seed"
        mean = f"{statistics.mean(have):.1f} ({spread})" if have else "-"
        accs = [a for a in acc if a is not None]
        per_seed = " / ".join("-" if v is None else f"{v:.1f}" for v in miou)
        acc_cell = f"{statistics.mean(accs):.1f}" if accs else "-"
        minutes_cell = f"{minutes:.1f}" if minutes else "-"
        have_alone = [v for v in alone if v is not None]
        alone_cell = (" / ".join("-" if v is None else f"{v:.1f}" for v in alone)
                      + f": {statistics.mean(have_alone):.1f}") if have_alone else "-"
        lines.append(f"| {r.name}: {r.note} | {o['seg.labels']} | {per_seed} | {mean} | {acc_cell} | {alone_cell} | "
                     f"{minutes_cell} | {steps or '-'} |")
    return "\n".join(lines), rows


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    series = [(labels, key, marker, fill) for labels, marker in (("gt", "s"), ("pseudo", "o"))
              for key, fill in (("miou", True), ("miou_alone", False))]
    for labels, key, marker, fill in series:
        pts = [(r["minutes"], statistics.mean([m for m in r[key] if m is not None]), r["recipe"])
               for r in rows if r["overrides"]["seg.labels"] == labels and r["minutes"]
               and any(m is not None for m in r.get(key, []))]
        if not pts:
            continue
        gated = key == "miou" and any(r.get("miou_alone") and any(r["miou_alone"]) for r in rows)
        label = f"{labels} labels" + (", class gate" if gated else ", the network alone" if key != "miou" else "")
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label,
                   facecolors=None if fill else "none", edgecolors=None if fill else f"C{len(ax.collections)}")
        for x, y, name in pts:
            ax.annotate(name.split("-", 2)[-1], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("train_seg minutes (2 CPU cores)")
    ax.set_ylabel("val mIoU (%)")
    ax.set_title("DeepLab v3+ on voc-mini: val mIoU against training time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def experiments_of_rows(rows: list[dict]) -> dict[str, dict]:
    """The experiments a study file's rows were made of, as `experiments()` returns them (their metrics only)."""
    exps = {}
    for row in rows:
        for k, seed in enumerate(row["seeds"]):
            if row["miou"][k] is None:
                continue
            seg = {"miou": row["miou"][k], "pixel_acc": row["pixel_acc"][k]}
            if row.get("miou_alone") and row["miou_alone"][k] is not None:
                seg["ungated"] = {"miou": row["miou_alone"][k]}
            exps[f"{row['recipe']}-s{seed}"] = {"metrics": {
                "reports/metrics/seg.json": seg, "reports/train_seg/metrics.json": {"seconds": row["seconds"][k]}}}
    return exps


def quick(seeds: list[int]) -> None:
    """--quick: every grid's commands checked; each committed study file re-rendered from its own rows."""
    quick_check([r for grid in GRIDS for labels in ("gt", "pseudo")
                 for r in _recipes(labels, GRIDS[grid], GRID_BASE[grid])], seeds, ["eval_seg"])
    for grid in GRIDS:
        path = ROOT / "reports" / "studies" / f"seg_recipe_{grid}.json"
        if not path.is_file():
            continue
        saved = json.loads(path.read_text())
        names = {row["recipe"] for row in saved}
        recipes = [r for labels in ("gt", "pseudo") for r in _recipes(labels, GRIDS[grid], GRID_BASE[grid])
                   if r.name in names]
        missing = sorted(names - {r.name for r in recipes})
        if missing:
            raise SystemExit(f"{path}: rows {missing} are no longer in grid {grid!r}")
        row_seeds = saved[0]["seeds"]
        text, rows = table(recipes, row_seeds, experiments_of_rows(saved))
        by_name = {row["recipe"]: row for row in saved}
        changed = [row["recipe"] for row in rows if row["miou"] != by_name[row["recipe"]]["miou"]]
        if changed:
            raise SystemExit(f"{path}: rows {changed} do not come back through the table code")
        with tempfile.TemporaryDirectory() as tmp:
            plot(rows, Path(tmp) / f"seg_recipe_{grid}.png")
        print(text.splitlines()[0] if grid != "demo" else text)
        print(f"quick report: {path.name} re-rendered, {len(rows)} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="main", choices=sorted(GRIDS))
    parser.add_argument("--labels", nargs="+", default=["gt", "pseudo"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rows", nargs="+", help="run only these rows of the grid (e.g. default bb1); the table "
                        "still shows every row, with the seeds that exist")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--report", action="store_true", help="run nothing: write the table and plot from the "
                        "experiments that exist (a seed without a run shows as '-')")
    parser.add_argument("--quick", action="store_true", help="check every grid's commands, re-render the "
                        "committed study files (nothing run, nothing written in reports/)")
    args = parser.parse_args()
    main_logging()
    if args.quick:
        quick(args.seeds)
        return
    recipes = [r for labels in args.labels for r in _recipes(labels, GRIDS[args.grid], GRID_BASE[args.grid])]
    unknown = set(args.rows or ()) - {name for name, _, _ in GRIDS[args.grid]}
    if unknown:
        parser.error(f"--rows: {sorted(unknown)} not in grid {args.grid!r}")
    chosen = [r for r in recipes if not args.rows or r.name.split("-", 2)[-1] in args.rows]
    if not args.report:
        run_grid(chosen, args.seeds, ["eval_seg"], dry_run=args.dry_run)
    if args.dry_run:
        return
    text, rows = table(recipes, args.seeds)
    out = ROOT / "reports" / "studies"
    out.mkdir(parents=True, exist_ok=True)
    plot(rows, out / f"seg_recipe_{args.grid}.png")
    commands = "\n".join(" ".join(r.command(s, ["eval_seg"])) for r, row in zip(recipes, rows)
                         for s, m in zip(args.seeds, row["miou"]) if m is not None)  # the runs in the table
    (out / f"seg_recipe_{args.grid}.md").write_text(
        f"# Segmentation recipe study, grid '{args.grid}' (voc-mini val)\n\n{text}\n\n"
        f"![val mIoU against training minutes](seg_recipe_{args.grid}.png)\n\nCommands:\n```\n{commands}\n```\n")
    (out / f"seg_recipe_{args.grid}.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
