"""Where the random walk gains or loses on voc-mini (issue 25): the walk's labels against the train masks over
its knobs, beside the same walk on a perfect boundary map, the seeds' pair labels against the true pairs, and
the learned boundary map against the true boundaries.

    python scripts/random_walk_study.py [--out reports/studies/random_walk_seed0.json]   after `dvc repro random_walk`
    python scripts/random_walk_study.py --render        the report from every random_walk_seed*.json
    python scripts/random_walk_study.py --quick         the whole study on 4 generated scenes, seconds

Reads the workspace as the random_walk stage does (data/prepared, data/cams, data/pseudo_labels, train_irn's
model.pt, params.yaml's random_walk section for the flip and max_side) and scores every pixel of the train masks
(ignored = miss, as random_walk.json's miou_all_pixels). Per image the boundary map is computed once and each
walk is run once per beta for every exp_times of the grid (irn.random_walk.propagate_stages); each background
threshold of the grid is then one comparison. Boundary maps: `learned` (train_irn's network), `oracle` (the train
mask's own boundaries, irn.diagnostics.mask_boundary: what a perfect relation network would give). exp_times 0
is one step (2^0). Two rows without a walk: the stride-4 CAMs the walk starts from, upsampled as the walk's output
is, and the full-resolution CAMs (eval_cam's number), the row to beat. The thresholds are chosen on the masks they are scored on: the best cells are
optimistic; the row at the committed params is not.

--render writes reports/studies/random_walk.md (mean and spread over the seeds' JSON files) and
random_walk.png (mIoU against the background threshold); each run writes random_walk_seed<N>_figure.png (per
image: image, mask, seeds, learned and oracle boundary maps, the walk's labels at the committed params and at
the best cell).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from textwsss.irn.diagnostics import BoundaryScore, mask_boundary, pair_agreement  # noqa: E402
from textwsss.irn.pair_labels import seeds_at_stride  # noqa: E402
from textwsss.irn.pairs import pair_index  # noqa: E402
from textwsss.irn.random_walk import propagate_stages, walked_maps  # noqa: E402
from textwsss.metrics import ConfusionMatrix  # noqa: E402

from mutation import cpu_name  # noqa: E402  (scripts/: the CPU line every study report gives)

STUDIES = ROOT / "reports" / "studies"
BETAS = (5.0, 10.0, 20.0)
EXP_TIMES = (0, 2, 4, 6, 8)
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))
log = logging.getLogger("random_walk_study")


def _resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if labels.shape == tuple(size):
        return labels
    t = torch.from_numpy(labels.astype(np.int64))[None, None].float()
    return F.interpolate(t, size=tuple(size), mode="nearest")[0, 0].numpy().astype(labels.dtype)


def threshold_labels(maps: torch.Tensor, keys, threshold: float, shape) -> np.ndarray:
    """Labels (0 background, keys + 1) of scores maps (C, H, W) against a constant background score."""
    if not len(keys):
        return np.zeros(shape, np.uint8)
    best, arg = maps.max(0)
    return np.where(best.numpy() > threshold, (np.asarray(keys) + 1)[arg.numpy()], 0).astype(np.uint8)


class Curves:
    """One confusion matrix per (row, background threshold); rows are named cells of the study's grid."""

    def __init__(self, names):
        self.names = list(names)
        self.matrices: dict[str, dict[float, ConfusionMatrix]] = {}

    def update(self, row: str, maps: torch.Tensor, keys: np.ndarray, gt: np.ndarray) -> None:
        """maps (C, H, W) scores of the image's classes (keys: 0-based), compared with each threshold."""
        cms = self.matrices.setdefault(row, {t: ConfusionMatrix(self.names) for t in THRESHOLDS})
        for t, cm in cms.items():
            cm.update(threshold_labels(maps, keys, t, gt.shape), gt)

    def curve(self, row: str) -> dict[float, float]:
        return {t: cm.summary()["miou"] for t, cm in self.matrices[row].items()}


def study(items, model, *, flip: bool, committed: dict, train_radius: int, names, figure_ids=()) -> dict:
    """items: (id, image, work_size, cams4 (C, h4, w4) normalised, keys, cams_full (C, H, W) or None, seeds
    (H, W), gt (H, W)). Returns the JSON record; `figure_ids` images keep their maps for the figure."""
    from textwsss.pipeline.random_walk import boundary_map

    curves = Curves(names)
    score = BoundaryScore()
    pairs = {"pos": 0, "pos_true": 0, "neg": 0, "neg_true": 0, "related": 0}
    radius = committed["radius"]
    kept = {}
    walks = [("learned", b) for b in BETAS] + [("oracle", 10.0)]  # the oracle at IRN's beta, whatever the params
    for image_id, image, work, cams4, keys, cams_full, seeds, gt in items:
        size = gt.shape
        gt_work = _resize_nearest(gt, work)
        maps = {"learned": boundary_map(model, image, work, flip), "oracle": mask_boundary(gt_work)}
        score.update(maps["learned"], maps["oracle"])
        seeds_work = _resize_nearest(seeds, work)
        index = pair_index(*maps["oracle"].shape, train_radius)
        for k, v in pair_agreement(seeds_at_stride(seeds_work), seeds_at_stride(gt_work), index).items():
            pairs[k] += v
        if cams_full is not None:
            curves.update("full-resolution CAMs (eval_cam)", torch.from_numpy(cams_full.astype(np.float32)), keys, gt)
        cams = torch.from_numpy(cams4)
        walked = {}
        still = walked_maps(cams.double(), work)
        if tuple(work) != tuple(size):
            still = F.interpolate(still[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
        curves.update("stride-4 CAMs, no walk", still, keys, gt)
        for source, beta in walks:
            stages = propagate_stages(cams, torch.from_numpy(maps[source]), beta=beta, exp_times=EXP_TIMES,
                                      radius=radius) if len(keys) else {e: cams.double() for e in EXP_TIMES}
            for e, rw in stages.items():
                up = walked_maps(rw, work)
                if tuple(work) != tuple(size):
                    up = F.interpolate(up[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
                row = f"{source} beta {beta:g} exp_times {e}"
                curves.update(row, up, keys, gt)
                walked[row] = up
        if image_id in figure_ids:
            kept[image_id] = dict(image=image, gt=gt, seeds=seeds, keys=keys, walked=walked, **maps)
    rows = {row: curves.curve(row) for row in curves.matrices}
    best = {row: max(c.items(), key=lambda kv: (kv[1], -kv[0])) for row, c in rows.items()}
    at = f"learned beta {committed['beta']:g} exp_times {committed['exp_times']}"
    record = {
        "committed": committed,
        "at_committed": rows[at][_nearest(committed["bg_threshold"])] if at in rows else None,
        "curves": {row: {f"{t:.2f}": v for t, v in c.items()} for row, c in rows.items()},
        "best": {row: {"threshold": t, "miou": v} for row, (t, v) in best.items()},
        "pairs": {**pairs, "pos_precision": pairs["pos_true"] / max(pairs["pos"], 1),
                  "neg_precision": pairs["neg_true"] / max(pairs["neg"], 1),
                  "coverage": (pairs["pos"] + pairs["neg"]) / max(pairs["related"], 1)},
        "boundary": score.summary(),
    }
    return record, kept


def _nearest(t: float) -> float:
    return min(THRESHOLDS, key=lambda x: abs(x - t))


def figure(path: Path, kept: dict, record: dict) -> None:
    from textwsss.viz import blend, colorize, heatmap
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = record["committed"]
    at = f"learned beta {c['beta']:g} exp_times {c['exp_times']}"
    top = max((r for r in record["best"] if r.startswith("learned")), key=lambda r: record["best"][r]["miou"])
    columns = ["image", "mask", "CRF seeds", "boundary (learned)", "boundary (oracle)",
               f"walk, committed (bg {c['bg_threshold']:g})",
               f"walk, best: {top.replace('learned ', '')} bg {record['best'][top]['threshold']:g}"]
    fig, axes = plt.subplots(len(kept), len(columns), figsize=(2.2 * len(columns), 1.9 * len(kept)), squeeze=False)
    for r, (image_id, k) in enumerate(kept.items()):
        def labels(row, t):
            return threshold_labels(k["walked"][row], k["keys"], t, k["gt"].shape)

        tiles = [k["image"], blend(k["image"], colorize(k["gt"])), blend(k["image"], colorize(k["seeds"])),
                 heatmap(k["learned"]), heatmap(k["oracle"]),
                 blend(k["image"], colorize(labels(at, _nearest(c["bg_threshold"])))),
                 blend(k["image"], colorize(labels(top, record["best"][top]["threshold"])))]
        for col, tile in enumerate(tiles):
            ax = axes[r, col]
            ax.imshow(tile)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[col], fontsize=7)
        axes[r, 0].set_ylabel(image_id, fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def workspace_items(params, ws, ids):
    """The study's per-image inputs, read as the random_walk stage reads them."""
    from textwsss.cam import cam_path, load_cam
    from textwsss.data.images import read_image, read_mask, working_size
    from textwsss.pipeline.random_walk import strided, walk_cams

    data = ws.dataset(params)
    for image_id in ids:
        image = read_image(data.image_path(image_id))
        work = working_size(*image.shape[:2], params.random_walk.max_side)
        cams4, keys = walk_cams(cam_path(ws.cams, image_id), strided(work))
        cams_full, _ = load_cam(cam_path(ws.cams, image_id))
        seeds = read_mask(ws.model_dir("pseudo_labels") / f"{image_id}.png")
        yield image_id, image, work, cams4, keys, cams_full, seeds, data.read_mask(image_id)


def generated_items(n: int):
    """Generated scenes (textwsss.synthetic) with CAM-like maps and seeds degraded from their masks."""
    from textwsss.pipeline.pseudo_labels import cams_from_mask
    from textwsss.pipeline.random_walk import strided
    from textwsss.synthetic import make_scenes

    for i, scene in enumerate(make_scenes(n, seed=0, size=64)):
        cams, keys = cams_from_mask(scene.mask, dtype=np.float32)
        grid = strided(scene.mask.shape)
        small = F.interpolate(torch.from_numpy(cams)[None], size=grid, mode="area")[0]
        cams4 = (small / small.amax((1, 2), keepdim=True).clamp_min(1e-5)).numpy()
        seeds = scene.mask.copy()
        seeds[mask_boundary(scene.mask, 1) > 0] = 255
        yield f"scene{i}", scene.image, scene.mask.shape, cams4, keys, cams, seeds, scene.mask


def render(folder: Path = STUDIES) -> str:
    """folder/random_walk.md and .png from every folder/random_walk_seed<N>.json."""
    files = sorted(folder.glob("random_walk_seed*[0-9].json"))
    if not files:
        raise SystemExit(f"no {folder}/random_walk_seed<N>.json: run scripts/random_walk_study.py after "
                         f"`dvc repro random_walk` first")
    out_md = folder / "random_walk.md"
    runs = [json.loads(f.read_text()) for f in files]
    seeds = [r["seed"] for r in runs]
    c = runs[0]["committed"]

    def stat(values, digits=1):
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

    rows = [r for r in runs[0]["best"]]
    lines = [
        "# Where the random walk gains or loses (issue 25)", "",
        f"`python scripts/random_walk_study.py` after `dvc repro random_walk` (seed 0) and after "
        f"`dvc exp run -S seed=N random_walk` (seeds 1, 2); `--render` for this page. Seeds {seeds}: mean "
        f"(min-max). Every pixel of the 148 train masks is scored (an unlabelled pixel is a miss), as "
        f"random_walk.json's miou_all_pixels. Relation network: train_irn "
        + ", ".join(sorted({f"{r['train_irn']['epochs']} epochs at lr {r['train_irn']['lr']:g}" for r in runs}))
        + f"; walk radius {c['radius']}.", "",
        "| | mIoU, every pixel |", "|---|---|",
        f"| the walk at IRN's values (beta 10, exp_times 8, background 0.25) | "
        f"{stat([r['curves']['learned beta 10 exp_times 8']['0.25'] for r in runs])} |",
        f"| the walk at the cell tuned on seed 0 (beta 20, exp_times 6, background 0.65) | "
        f"{stat([r['curves']['learned beta 20 exp_times 6']['0.65'] for r in runs])} |",
        f"| the oracle boundary map (the mask's boundaries), its best cell | "
        f"{stat([max(v['miou'] for k, v in r['best'].items() if k.startswith('oracle')) for r in runs])} |",
        f"| stride-4 CAMs, no walk, background 0.50 | "
        f"{stat([r['curves']['stride-4 CAMs, no walk']['0.50'] for r in runs])} |",
        f"| full-resolution CAMs, background 0.50 (eval_cam) | "
        f"{stat([r['curves']['full-resolution CAMs (eval_cam)']['0.50'] for r in runs])} |",
        f"| CRF seeds (pseudo_labels.json miou_all_pixels) | {stat([r.get('seeds_all_pixels') for r in runs])} |",
        "", "Best background threshold of each cell (chosen on the masks it is scored on: optimistic):", "",
        "| boundary map, beta, exp_times | best threshold | mIoU, every pixel |", "|---|---|---|"]
    for row in rows:
        if not all(row in r["best"] for r in runs):
            continue
        lines.append(f"| {row} | {stat([r['best'][row]['threshold'] for r in runs])} | "
                     f"{stat([r['best'][row]['miou'] for r in runs])} |")
    lines += ["", "The seeds' pair labels (train_irn's radius) against the true pairs, and the learned boundary map "
              "against the masks' boundaries (stride-4 cells):", "",
              "| | value |", "|---|---|",
              f"| positive pairs that are truly same-label | {stat([100 * r['pairs']['pos_precision'] for r in runs])}% |",
              f"| negative pairs that are truly different | {stat([100 * r['pairs']['neg_precision'] for r in runs])}% |",
              f"| true pairs the seeds label | {stat([100 * r['pairs']['coverage'] for r in runs])}% |",
              f"| boundary map ROC AUC (true boundary cells vs the rest) | {stat([r['boundary']['auc'] for r in runs], 2)} |",
              f"| mean boundary value on true boundary cells | {stat([r['boundary']['mean_on_boundary'] for r in runs], 2)} |",
              f"| mean boundary value elsewhere | {stat([r['boundary']['mean_elsewhere'] for r in runs], 2)} |",
              "", "Wall time per seed (shared with other work): "
              + ", ".join(f"seed {r['seed']} {r['wall_s'] / 60:.1f} min on {r['cpu']}" for r in runs) + ".",
              "", "![mIoU against the background threshold](random_walk.png)", ""]
    lines += [f"![seed {s}: boundary maps and labels](random_walk_seed{s}_figure.png)" for s in seeds]
    text = "\n".join(lines) + "\n"
    _curve_plot(out_md.with_suffix(".png"), runs)
    tmp = out_md.with_name(out_md.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out_md)
    return text


def _curve_plot(path: Path, runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = runs[0]["committed"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for row in [f"learned beta {c['beta']:g} exp_times {e}" for e in EXP_TIMES] + \
               [f"oracle beta {c['beta']:g} exp_times {c['exp_times']}", "stride-4 CAMs, no walk",
                "full-resolution CAMs (eval_cam)"]:
        if not all(row in r["curves"] for r in runs):
            continue
        ts = [float(t) for t in runs[0]["curves"][row]]
        mean = [statistics.mean(r["curves"][row][f"{t:.2f}"] for r in runs) for t in ts]
        ax.plot(ts, mean, label=row, linestyle="--" if not row.startswith("learned") else "-")
    ax.axvline(c["bg_threshold"], color="grey", lw=0.8)
    ax.set_xlabel("background threshold")
    ax.set_ylabel("mIoU, every pixel (train masks)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def write(out: Path, record: dict, kept: dict) -> None:
    """The record as JSON and its figure beside it (<name>_figure.png), each written whole or not at all."""
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(out)
    figure(out.with_name(out.stem + "_figure.png"), kept, record)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON to write (default reports/studies/random_walk_seed<N>.json)")
    parser.add_argument("--n", type=int, default=0, help="the first n train images only (0: all)")
    parser.add_argument("--render", action="store_true", help="only the report from the seeds' JSON files")
    parser.add_argument("--quick", action="store_true", help="4 generated scenes, an untrained network, seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.render:
        render()
        log.info("report: %s", STUDIES / "random_walk.md")
        return 0
    start = time.perf_counter()
    torch.manual_seed(0)
    names = ["background"] + [f"class{k}" for k in range(20)]
    committed = {"beta": 10.0, "exp_times": 8, "radius": 5, "bg_threshold": 0.25}
    if args.quick:
        from textwsss.models.factory import build_boundary_net

        model = build_boundary_net(pretrained="none").eval()
        items = list(generated_items(4))
        record, kept = study(items, model, flip=True, committed=committed, train_radius=10, names=names,
                             figure_ids=("scene0",))
        assert len(kept) == 1 and record["pairs"]["pos_precision"] == 1.0, "seeds cut from the masks must agree"
        with tempfile.TemporaryDirectory() as tmp:
            record.update(seed=0, n_images=len(items), cpu=cpu_name(), wall_s=time.perf_counter() - start,
                          seeds_all_pixels=None, train_irn={"epochs": 0, "lr": 0.0})
            write(Path(tmp) / "random_walk_seed0.json", record, kept)
            text = render(Path(tmp))
            assert (Path(tmp) / "random_walk.png").is_file() and "oracle beta 10 exp_times 8" in text
        print(f"quick check: walk study on {len(items)} generated scenes, {len(record['best'])} cells, oracle walk "
              f"{record['best']['oracle beta 10 exp_times 8']['miou']:.1f} mIoU, boundary AUC "
              f"{record['boundary']['auc']:.2f}")
        return 0
    from textwsss.params import load_params
    from textwsss.pipeline.workspace import Workspace
    from textwsss.models.runtime import for_inference

    params = load_params()
    ws = Workspace(ROOT)
    p = params.random_walk
    committed = {"beta": p.beta, "exp_times": p.exp_times, "radius": p.radius, "bg_threshold": p.bg_threshold}
    model, _ = ws.load_stage_model("train_irn", "cpu")
    model = for_inference(model, "cpu")
    data = ws.dataset(params)
    ids = [i for i in data.ids("train") if i in set(data.ids("score"))]
    ids = ids[:args.n] if args.n else ids
    figure_ids = tuple(ids[:: max(len(ids) // 4, 1)][:4])
    record, kept = study(tqdm(workspace_items(params, ws, ids), total=len(ids), desc="walk study", unit="img"),
                         model, flip=p.flip, committed=committed, train_radius=params.train_irn.radius,
                         names=list(data.classes.label_names), figure_ids=figure_ids)
    seeds_json = ROOT / "reports" / "metrics" / "pseudo_labels.json"
    record.update(seed=params.seed, n_images=len(ids), cpu=cpu_name(), wall_s=time.perf_counter() - start,
                  train_irn=params.train_irn.model_dump(), random_walk=p.model_dump(),
                  seeds_all_pixels=json.loads(seeds_json.read_text()).get("miou_all_pixels")
                  if seeds_json.is_file() else None)
    out = args.out or STUDIES / f"random_walk_seed{params.seed}.json"
    write(out, record, kept)
    best = max((r for r in record["best"] if r.startswith("learned")), key=lambda r: record["best"][r]["miou"])
    log.info("seed %d: walk at the committed params %.1f; best learned cell %s bg %.2f: %.1f; oracle %.1f; "
             "boundary AUC %.3f; %s (%.0f s)", params.seed, record["at_committed"], best,
             record["best"][best]["threshold"], record["best"][best]["miou"],
             record["best"]["oracle beta 10 exp_times 8"]["miou"], record["boundary"]["auc"],
             out, record["wall_s"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
