"""train_seg's learning curve: val mIoU against the training budget for a few recipes, in-process, on any device.

    python scripts/seg_curve.py --source . --out reports/studies/seg_curve.json [--shard 0/4] [--device cuda]
    python scripts/seg_curve.py --quick     every job's params validated, the committed GPU curve re-plotted

The DVC study (scripts/seg_recipe_study.py) measures recipes on 2 CPU cores, where a long curve does not fit in
a session; this script runs the same train_seg and eval_seg code on whatever device it is given (a GPU reaches
200 epochs in about a minute), to show where the curve saturates. It reads the data/prepared folder, the
pseudo-labels and the CAM network of a workspace where `dvc repro` is done (--source), and trains each job in a
workspace of its own under --scratch. Each job is a recipe (params overrides on top of params.yaml), a label
source (gt | pseudo), a number of epochs and a seed. Training minutes on 2 cores are not measured here: they
are the step count times the 2-core step time that seg_recipe_study.py measures for the same crop and backbone.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from textwsss.params import parse_params  # noqa: E402
from textwsss.pipeline import eval_seg, train_seg  # noqa: E402
from textwsss.pipeline.workspace import Workspace  # noqa: E402

from seg_recipe_study import BASE as STUDY_BASE, LOW_RES  # noqa: E402  (scripts/ is on the path)

log = logging.getLogger("seg_curve")

#: The recipe every curve starts from: the study's (the defaults before it), without figures.
BASE = {**STUDY_BASE, "eval_seg.figures": 0}

#: name -> (overrides, epochs of the curve, seeds), in the order they run (the most telling first)
CURVES: dict[str, tuple[dict, list[int], list[int]]] = {
    "base": ({}, [10, 40, 120], [0, 1]),
    "lowres-caminit": ({**LOW_RES, "seg.init": "cam"}, [20, 80], [0, 1]),
    "caminit": ({"seg.init": "cam"}, [10, 40], [0, 1]),
    "lowres": (LOW_RES, [20, 80], [0, 1]),
    "frozenbn": ({"train_seg.freeze_batchnorm": True}, [40], [0]),
    "bb1": ({"train_seg.backbone_lr_mult": 1.0}, [40], [0]),
    "lr03": ({"train_seg.lr": 0.03}, [40], [0]),
    "balanced": ({"train_seg.loss": "balanced_ce"}, [40], [0]),
}


def jobs(curves: dict, labels: list[str]) -> list[dict]:
    out = []
    for name, (over, epochs, seeds) in curves.items():
        for s in seeds:
            for e in epochs:
                for lab in labels:
                    out.append({"curve": name, "labels": lab, "epochs": e, "seed": s,
                                "overrides": {**BASE, **over, "seg.labels": lab, "train_seg.epochs": e, "seed": s}})
    return out


#: seconds per DeepLab v3+ (EfficientNet-Lite0, ASPP 128 / decoder 96) training step of 8 crops on 2 cores of an
#: AMD EPYC (Zen 4, AVX-512), measured quietly (benchmarks: one train_seg epoch / 19 steps), by crop size
STEP_SECONDS_2CORES = {256: 1.20, 192: 0.64}


def report(results: list[dict], out: Path) -> str:
    """Markdown table (mean and spread over seeds per curve, labels and epochs) and a plot of val mIoU against
    2-core training minutes; writes out.md and out.png next to the results."""
    import statistics
    from collections import defaultdict

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["curve"], r["labels"], r["epochs"])].append(r)
    lines = ["| curve | labels | epochs | steps | minutes on 2 cores | val mIoU per seed | mean (spread) |",
             "|---|---|---|---|---|---|---|"]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for (curve, labels, epochs), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        m = [r["miou"] for r in rs]
        minutes = rs[0]["steps"] * STEP_SECONDS_2CORES[rs[0]["crop"]] / 60
        lines.append(f"| {curve} | {labels} | {epochs} | {rs[0]['steps']} | {minutes:.1f} | "
                     f"{' / '.join(f'{v:.1f}' for v in m)} | {statistics.mean(m):.1f} "
                     f"({f'{max(m) - min(m):.1f}' if len(m) > 1 else '1 seed'}) |")
    for k, labels in enumerate(("gt", "pseudo")):
        for curve in dict.fromkeys(c for c, lab, _ in groups if lab == labels):
            pts = sorted((groups[key][0]["steps"] * STEP_SECONDS_2CORES[groups[key][0]["crop"]] / 60,
                          statistics.mean(r["miou"] for r in groups[key]))
                         for key in groups if key[0] == curve and key[1] == labels)
            ax[k].plot(*zip(*pts), marker="o", label=curve)
        ax[k].set_title(f"trained on {'ground-truth masks' if labels == 'gt' else 'pseudo-labels'}")
        ax[k].set_xlabel("train_seg minutes on 2 CPU cores (steps x measured step time)")
        ax[k].set_xscale("log")
        ax[k].grid(alpha=0.3)
        ax[k].legend(fontsize=8)
    ax[0].set_ylabel("voc-mini val mIoU (mean over seeds)")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=100)
    text = "\n".join(lines)
    out.with_suffix(".md").write_text(f"# train_seg learning curves (voc-mini)\n\n{text}\n")
    return text


def apply_overrides(raw: dict, overrides: dict) -> dict:
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return raw


def link_workspace(source: Path, target: Path) -> Workspace:
    """A fresh workspace whose inputs (prepared index, pseudo-labels, CAM network) are the source's."""
    for rel in ("data/prepared", "data/pseudo_labels", "data/train_cam"):
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to((source / rel).resolve(), target_is_directory=True)
    return Workspace(target)


def run_job(job: dict, raw: dict, source: Path, scratch: Path) -> dict:
    name = f"{job['curve']}-{job['labels']}-e{job['epochs']}-s{job['seed']}"
    ws = link_workspace(source, scratch / name)
    params = parse_params(apply_overrides(raw, job["overrides"]), f"params.yaml + {name}")
    start = time.perf_counter()
    train_seg.run(params, ws)
    seconds = time.perf_counter() - start
    eval_seg.run(params, ws)
    metrics = json.loads((ws.metrics / "seg.json").read_text())
    epochs = params.train_seg.epochs
    steps = epochs * -(-len(ws.dataset(params).ids("train")) // params.train_seg.batch_size)
    result = {**{k: job[k] for k in ("curve", "labels", "seed")}, "epochs": epochs, "steps": steps,
              "crop": params.train_seg.crop_size, "miou": metrics["miou"], "pixel_acc": metrics.get("pixel_acc"),
              "train_seconds": round(seconds, 1)}
    log.info("%s: val mIoU %.2f (%d steps, %.0f s)", name, metrics["miou"], steps, seconds)
    return result


def check_jobs(todo: list[dict], raw: dict) -> None:
    """Every job's params (params.yaml + its overrides) validated as run_job validates them, before any runs."""
    for job in todo:
        parse_params(apply_overrides(raw, job["overrides"]), f"params.yaml + {job['curve']} job")


def quick(raw: dict) -> None:
    """--quick: every job of every curve validated; the committed GPU curve's table and plot rebuilt in a
    temporary folder."""
    todo = jobs(CURVES, ["gt", "pseudo"])
    check_jobs(todo, raw)
    results = json.loads((ROOT / "reports" / "studies" / "seg_curve_gpu.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        text = report(results, Path(tmp) / "seg_curve.json")
    print(text)
    print(f"quick check: {len(todo)} curve jobs' params valid; {len(results)} committed results re-rendered")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT, help="workspace where `dvc repro` is done")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--scratch", type=Path, default=ROOT / ".seg_curve")
    parser.add_argument("--out", type=Path, help="results JSON (required unless --list or --quick)")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th job starting at i")
    parser.add_argument("--labels", nargs="+", default=["gt", "pseudo"])
    parser.add_argument("--curves", nargs="+", default=list(CURVES))
    parser.add_argument("--max-epochs", type=int, default=0, help="drop longer jobs (0: none)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=YAML",
                        help="extra overrides for every job, e.g. device=cuda data.workers=4 data.root=/x")
    parser.add_argument("--list", action="store_true", help="print the jobs and stop")
    parser.add_argument("--report", nargs="+", type=Path, metavar="JSON",
                        help="only write the table and plot of these result files to --out (.md, .png)")
    parser.add_argument("--quick", action="store_true", help="validate every job, re-render the committed curve")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("PIL").setLevel(logging.WARNING)
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    if args.quick:
        quick(yaml.safe_load(args.params.read_text()))
        return
    if args.out is None and not args.list:
        parser.error("--out is required (the results JSON)")
    if args.report:
        results = [r for f in args.report for r in json.loads(f.read_text())]
        print(report(results, args.out))
        return
    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    todo = jobs({k: CURVES[k] for k in args.curves}, args.labels)
    if args.max_epochs:
        todo = [j for j in todo if j["epochs"] <= args.max_epochs]
    i, n = (int(x) for x in args.shard.split("/"))
    todo = todo[i::n]
    raw = yaml.safe_load(args.params.read_text())
    check_jobs([{**j, "overrides": {**j["overrides"], **extra}} for j in todo], raw)  # a typo stops before any job
    if args.list:
        for j in todo:
            print(j["curve"], j["labels"], j["epochs"], j["seed"])
        return
    results = []
    for job in todo:
        job["overrides"].update(extra)
        results.append(run_job(job, raw, args.source, args.scratch))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")  # after every job: a killed shard keeps its part


if __name__ == "__main__":
    main()
