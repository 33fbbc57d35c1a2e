"""eval_cam: CAM mIoU on the train images that have masks (the 'score' ids), with a background-threshold sweep,
the curve and overlay figures. Without any mask it says so and writes metrics of None."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ..cam import cam_path, labels_from_cams, load_cam, sweep_thresholds
from ..data.prepared import PreparedDataset
from ..io import write_json
from ..viz import cam_figure, pick_figure_ids
from .workspace import Workspace

log = logging.getLogger(__name__)


def _items(data: PreparedDataset, ids: Sequence[str], cam_dir: Path):
    for i in ids:
        cams, keys = load_cam(cam_path(cam_dir, i))
        gt = data.read_mask(i)
        if cams.shape[1:] != gt.shape:
            raise ValueError(f"{cam_path(cam_dir, i)}: CAM size {cams.shape[1:]} differs from mask {gt.shape} ({i})")
        yield cams, keys, gt


def evaluate_cams(data: PreparedDataset, ids: Sequence[str], cam_dir: Path, thresholds: Sequence[float]):
    return sweep_thresholds(_items(data, ids, cam_dir), thresholds, data.classes.label_names)


def write_cam_figures(data: PreparedDataset, ids: Sequence[str], cam_dir: Path, threshold: float | None,
                      out_dir: Path, n: int) -> None:
    for i in pick_figure_ids(ids, n):
        cams, keys = load_cam(cam_path(cam_dir, i))
        gt = data.read_mask(i) if data.has_mask(i) else None
        pred = labels_from_cams(cams, keys, threshold if threshold is not None else 0.15)
        cam_figure(out_dir / f"{i}.png", data.read_image(i), cams, keys, gt, pred, data.classes)


def run(params, ws: Workspace) -> None:
    data = ws.dataset(params)
    scored = data.ids("score")
    note = data.describe_scoring("train", scored)
    best, curve = evaluate_cams(data, scored, ws.cams, params.eval_cam.thresholds.values())
    best["note"] = note
    write_json(ws.metrics / "cam.json", best)
    write_json(ws.plots / "cam_threshold.json", curve)
    write_cam_figures(data, scored or data.ids("train"), ws.cams, best["threshold"], ws.figures("cam"),
                      params.eval_cam.figures)
    if best["miou"] is None:
        log.warning("CAMs not scored: none of the train images has a mask (%s); cam.json holds no scores", note)
    else:
        log.info("CAM mIoU %.2f at threshold %.2f (%s)", best["miou"], best["threshold"], note)
