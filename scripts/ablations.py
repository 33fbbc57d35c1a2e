"""The ablation table of docs/ablations.md: each CLIMS term, the pseudo-label CRF modes, the ground-truth upper
bound and the TAS options, each one change from the committed params.yaml, through the whole DAG.

    python scripts/ablations.py [--seeds 0] [--dry-run] [--quick]

Every row runs as `dvc exp run -n <name>-s<seed> -S ...` (scripts/exp_grid.py) from a repository whose
`dvc repro` is done: only the stages that read the changed key (and what follows them) rerun; the CLIMS rows
stop at the pseudo-labels (their train_seg would cost 4 more minutes each on 2 cores). Writes
reports/studies/ablations.md (and .json) with the metrics committed at HEAD as the first row.
Rerunning it skips the experiments that exist already. --quick runs nothing: it checks every row's command
against params.yaml and dvc.yaml (exp_grid.check_commands) and renders the table from the committed
reports/studies/ablations.json (printed, nothing written).
"""
from __future__ import annotations

import argparse
import json
import subprocess

from exp_grid import ROOT, Recipe, experiments, main_logging, metric, quick_check, run_grid

CAM_STAGES = ["eval_cam", "pseudo_labels"]  # a CLIMS term's effect shows in the CAMs and the pseudo-labels
RECIPES = [
    Recipe("clims-no-otm", {"clims.alpha": 0.0}, "CLIMS without OTM", targets=CAM_STAGES),
    Recipe("clims-no-btm", {"clims.beta": 0.0}, "CLIMS without BTM", targets=CAM_STAGES),
    Recipe("clims-no-cbs", {"clims.gamma": 0.0}, "CLIMS without CBS", targets=CAM_STAGES),
    Recipe("clims-no-reg", {"clims.delta": 0.0}, "CLIMS without REG", targets=CAM_STAGES),
    Recipe("crf-none", {"pseudo_labels.mode": "none"}, "no CRF (CAM argmax, background 0.15)"),
    Recipe("crf-prob", {"pseudo_labels.mode": "prob"}, "CRF on probabilities (CLIP-ES style)"),
    Recipe("seg-gt-labels", {"seg.labels": "gt"}, "upper bound: train_seg on the train masks"),
    Recipe("tas-no-rectifier", {"tas.rectifier": False}, "TAS without the spatial rectifier"),
    Recipe("tas-no-negatives", {"tas.negatives": False}, "TAS without the N-score"),
]
FILES = {"cam": "reports/metrics/cam.json", "pseudo": "reports/metrics/pseudo_labels.json",
         "seg": "reports/metrics/seg.json", "tas": "reports/metrics/tas.json"}
COLUMNS = "| experiment | command | CAM mIoU (train) | pseudo-label mIoU (train; % ignored; on every pixel) | val mIoU (pixel acc; without the class gate) | TAS mIoU / oIoU |"


def _num(value, fmt="{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def row_cells(metrics: dict) -> dict:
    """The table's metric cells from {file: metrics} (an experiment's or the workspace's)."""
    exp = {"metrics": metrics}
    ignored = metric(exp, FILES["pseudo"], "ignore_ratio")
    pseudo = _num(metric(exp, FILES["pseudo"], "miou"))
    if ignored is not None:
        pseudo += f" ({100 * ignored:.1f}%"
        everywhere = metric(exp, FILES["pseudo"], "miou_all_pixels")
        pseudo += f"; every pixel {everywhere:.1f})" if everywhere is not None else ")"
    seg = _num(metric(exp, FILES["seg"], "miou"))
    if metric(exp, FILES["seg"], "pixel_acc") is not None:
        seg += f" ({metric(exp, FILES['seg'], 'pixel_acc'):.1f})"
    if metric(exp, FILES["seg"], "ungated", "miou") is not None:  # the network alone, without the class gate
        seg += f"; alone {metric(exp, FILES['seg'], 'ungated', 'miou'):.1f}"
    tas = f"{_num(metric(exp, FILES['tas'], 'miou'))} / {_num(metric(exp, FILES['tas'], 'oiou'))}"
    return {"cam": _num(metric(exp, FILES["cam"], "miou")), "pseudo": pseudo, "seg": seg, "tas": tas}


def committed_metrics() -> dict:
    """The metrics committed at HEAD (the defaults' run), whatever experiment the workspace holds now."""
    out = {}
    for file in FILES.values():
        shown = subprocess.run(["git", "show", f"HEAD:{file}"], cwd=ROOT, capture_output=True, text=True)
        out[file] = json.loads(shown.stdout) if shown.returncode == 0 else {}
    return out


def table(seeds: list[int]) -> tuple[str, list[dict]]:
    exps = experiments()
    rows = [{"recipe": "defaults", **row_cells(committed_metrics())}]
    for r in RECIPES:
        for s in r.seeds if r.seeds is not None else seeds:
            name = f"{r.name}-s{s}"
            found = exps.get(name)
            cells = row_cells(found["metrics"]) if found else {k: "not run" for k in ("cam", "pseudo", "seg", "tas")}
            if found and r.targets == CAM_STAGES:  # the later metric files are the baseline's, not this row's
                cells.update(seg="–", tas="–")
            rows.append({"recipe": name, "note": r.note, "overrides": r.overrides, **cells})
    return render(rows), rows


def render(rows: list[dict]) -> str:
    """The markdown table of the rows (the first: the defaults), each command rebuilt from its recipe."""
    recipes = {r.name: r for r in RECIPES}
    base, *others = rows
    lines = [COLUMNS, "|---|---|---|---|---|---|",
             f"| defaults (committed metrics) | `dvc repro` | {base['cam']} | {base['pseudo']} | {base['seg']} | "
             f"{base['tas']} |"]
    for row in others:
        name, seed = row["recipe"].rsplit("-s", 1)
        if name not in recipes:
            raise KeyError(f"ablations: row {row['recipe']!r} has no recipe in RECIPES")
        r = recipes[name]
        command = " ".join(r.command(int(seed), r.targets or []))
        lines.append(f"| {r.note} (seed {seed}) | `{command}` | {row['cam']} | {row['pseudo']} | "
                     f"{row['seg']} | {row['tas']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--quick", action="store_true", help="check every command, render the committed table")
    args = parser.parse_args()
    main_logging()
    if args.quick:
        quick_check(RECIPES, args.seeds, [])
        rows = json.loads((ROOT / "reports" / "studies" / "ablations.json").read_text())
        print(render(rows))
        return
    run_grid(RECIPES, args.seeds, [], dry_run=args.dry_run)
    if args.dry_run:
        return
    text, rows = table(args.seeds)
    out = ROOT / "reports" / "studies"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablations.md").write_text(f"# Ablations (voc-mini; one change each from params.yaml)\n\n{text}\n")
    (out / "ablations.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
