"""random_walk: IRN's random walk (step/make_sem_seg_labels.py) from the relation network of train_irn: a label
for every pixel of every train image, as palette PNGs in data/random_walk/ (0 background, 1..K), and their mIoU
on the train masks, scored exactly as pseudo_labels.json is (reports/metrics/random_walk.json).

Per image: the boundary map of the image at stride 4 (irn/boundary_net.py, with its flip as IRN); the stride-4
CAMs of its labelled classes (make_cam's `cams_s4`, normalised per class as IRN's `cam`); the walk over the
boundary map's affinities (irn/random_walk.py: transition matrix affinity^beta, 2^exp_times steps); the walked
maps upsampled, divided by their common maximum and compared with a constant background score (IRN's
sem_seg_bg_thres); the argmax. The background is not walked: IRN pads it after the walk, as here.

The boundary maps are computed in this process (on params `device`: a GPU when there is one), the walks, the
upsampling and the PNGs in a pool of processes (random_walk.workers), a few images ahead at most, so the stage
streams whatever the number of images. Every file depends only on its own inputs: the output is byte-identical
for any number of workers, and an interrupted run resumes where it stopped (resumable.py). As pseudo_labels'
labels, each file records the hash of the CAM file it was made from (make_cam's manifest): a CAM that make_cam
recomputed recomputes its walk and no other, and a CAM file damaged since it was written stops the stage with
its name. A new relation network (train_irn's model.pt is in the folder's stamp) starts an empty folder.
"""
from __future__ import annotations

import collections
import hashlib
import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..cam import cam_path, load_cam, normalise_per_class
from ..data.filecache import file_md5
from ..data.images import read_image, working_size
from ..data.prepared import PreparedDataset
from ..data.transforms import to_tensor
from ..io import label_png_bytes, write_bytes, write_json
from ..irn.random_walk import labels_from_scores, walk_scores
from ..models.runtime import for_inference, image_probe
from ..params import resolve_device
from .pseudo_labels import _single_threaded_children, cam_hashes, score_pseudo_labels
from .resumable import ResumableFolder, stamp_of
from .workspace import Workspace

log = logging.getLogger(__name__)

STRIDE = 4  # the boundary map's and the walk's grid


def strided(size: Sequence[int]) -> tuple[int, int]:
    """(ceil(H / 4), ceil(W / 4)): the stride-4 grid of an (H, W) image (IRN's strided_size)."""
    return (size[0] - 1) // STRIDE + 1, (size[1] - 1) // STRIDE + 1


def walk_cams(cam_file: Path, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(cams (C, *grid) float32 normalised per class, keys (C,) 0-based class indices) of a CAM file: make_cam's
    stride-4 maps when they have this size, else the full-resolution maps area-averaged onto the grid (CAM files
    of a make_cam without stride-4 maps, or a walk on images downscaled by random_walk.max_side)."""
    with np.load(cam_file) as f:
        has_strided = "cams_s4" in f.files
    if has_strided:
        from ..cam import load_cam_strided

        cams, keys = load_cam_strided(cam_file)
        if tuple(cams.shape[1:]) == tuple(grid):
            return normalise_per_class(torch.from_numpy(cams).clamp_min(0)).numpy(), keys
    cams, keys = load_cam(cam_file)
    if not len(keys):
        return np.zeros((0, *grid), np.float32), keys
    small = F.interpolate(torch.from_numpy(cams)[None], size=grid, mode="area")[0]
    return normalise_per_class(small.clamp_min(0)).numpy(), keys


@torch.no_grad()
def boundary_map(model, image: np.ndarray, size: tuple[int, int], flip: bool = True,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """The (ceil(h/4), ceil(w/4)) boundary map in [0, 1] of a uint8 (H, W, 3) image resized to `size` (h, w)
    (bilinear, as make_cam resizes), float32."""
    x = to_tensor(image)[None]
    if tuple(size) != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return model.boundary(x.to(device), flip=flip)[0].float().cpu().numpy()


def walk_one(boundary: np.ndarray, cams: np.ndarray, keys: np.ndarray, image_size: tuple[int, int],
             work_size: tuple[int, int], *, beta: float = 10, exp_times: int = 8, radius: int = 5,
             bg_threshold: float = 0.25) -> np.ndarray:
    """The (H, W) uint8 labels (0 background, keys + 1) of one image: the walk at the working size's stride-4
    grid, its scores upsampled (bilinear) to the image size when the two differ."""
    if not len(keys):
        return np.zeros(tuple(image_size), np.uint8)
    scores = walk_scores(torch.from_numpy(cams), torch.from_numpy(boundary), tuple(work_size),
                         bg_threshold=bg_threshold, beta=beta, exp_times=exp_times, radius=radius)
    if tuple(work_size) != tuple(image_size):
        scores = F.interpolate(scores[None], size=tuple(image_size), mode="bilinear", align_corners=False)[0]
    return labels_from_scores(scores, np.asarray(keys) + 1)


def _walk_task(task: tuple) -> tuple[str, int, str]:
    """Worker body: checks and reads its CAM file, walks, writes the PNG; returns (id, size, md5) of the PNG."""
    image_id, boundary, cam_file, cam_md5, image_size, work_size, out_file, knobs = task
    if cam_md5 is not None and file_md5(cam_file) != cam_md5:
        raise ValueError(f"{cam_file}: its content differs from what make_cam recorded in its manifest (damaged "
                         f"since it was written, e.g. by a failed copy or a damaged `dvc pull`); make_cam checks "
                         f"and recomputes it: `dvc repro -s -f make_cam`")
    cams, keys = walk_cams(cam_file, boundary.shape)
    if tuple(cams.shape[1:]) != tuple(boundary.shape):
        raise ValueError(f"{cam_file}: stride-4 CAMs of size {cams.shape[1:]}, the boundary map of {image_id} "
                         f"is {boundary.shape}")
    data = label_png_bytes(walk_one(boundary, cams, keys, image_size, work_size, **knobs))
    write_bytes(out_file, data)
    return image_id, len(data), hashlib.md5(data).hexdigest()


def generate_walk_labels(model, data: PreparedDataset, ids: Sequence[str], cam_dir: Path, out: ResumableFolder, *,
                         beta: float = 10, exp_times: int = 8, radius: int = 5, bg_threshold: float = 0.25,
                         flip: bool = True, max_side: int = 0, workers: int = 0,
                         cam_md5: dict[str, str] | None = None, device: str | torch.device = "cpu") -> int:
    """Writes the random-walk label PNG of every id the folder lacks; returns how many it wrote.

    model: a BoundaryNet in eval mode on `device`. cam_md5: {id: md5 of its CAM file} (pseudo_labels.cam_hashes):
    each CAM file is checked against it before use, and each label records it as its source. workers: 0 = one
    process per core, 1 = in this process, > 1 = a spawn pool (one BLAS/OpenMP thread each).
    """
    if workers < 0:
        raise ValueError(f"random_walk.workers: expected >= 0 (0: one per core), got {workers}")
    cam_md5 = cam_md5 or {}
    cam_dir = Path(cam_dir)
    ids = list(ids)
    missing = [i for i in ids if not cam_path(cam_dir, i).is_file()]
    if missing:
        raise FileNotFoundError(f"{cam_dir}: no CAM file for {len(missing)} ids: {', '.join(missing[:20])}; run "
                                f"the make_cam stage (`dvc repro make_cam`)")
    knobs = dict(beta=beta, exp_times=exp_times, radius=radius, bg_threshold=bg_threshold)
    todo = [i for i in ids if not out.done(i)]
    workers = min(workers or os.cpu_count() or 1, max(len(todo), 1))
    log.info("random walk for %d images (%d already written) with %d worker(s) -> %s", len(ids),
             len(ids) - len(todo), workers, out.folder)

    def tasks():
        for i in todo:
            image = read_image(data.image_path(i))
            size = image.shape[:2]
            work = working_size(*size, max_side)
            yield (i, boundary_map(model, image, work, flip, device), cam_path(cam_dir, i), cam_md5.get(i), size,
                   work, out.path(i), knobs)

    def record(written: tuple[str, int, str]) -> None:
        image_id, size, md5 = written
        out.record(image_id, size, md5, source=cam_md5.get(image_id))
        bar.update(1)

    with tqdm(total=len(ids), initial=len(ids) - len(todo), desc="random walk", unit="img", disable=None) as bar:
        if workers <= 1:
            for task in tasks():
                record(_walk_task(task))
            return len(todo)
        # a bounded window of images in flight: the boundary maps are made no faster than the pool walks them
        with _single_threaded_children(), multiprocessing.get_context("spawn").Pool(workers) as pool:
            pending: collections.deque = collections.deque()
            for task in tasks():
                pending.append(pool.apply_async(_walk_task, (task,)))
                while len(pending) >= 2 * workers:
                    record(pending.popleft().get())
            while pending:
                record(pending.popleft().get())
    return len(todo)


def run(params, ws: Workspace) -> None:
    p = params.random_walk
    device = resolve_device(params.device)
    data = ws.dataset(params)
    ids = data.ids("train")
    model_file = ws.model_file("train_irn")
    model, _ = ws.load_stage_model("train_irn", device)
    model = for_inference(model, device, probe=image_probe(device))
    # the CAMs are not in the stamp: each label is keyed to its own CAM file's hash instead
    stamp = stamp_of({"random_walk": p.model_dump(exclude={"workers"})}, [model_file, ws.prepared / "dataset.json"])
    sources = cam_hashes(ws.cams, ids)
    out = ResumableFolder(ws.model_dir("random_walk"), stamp, ".png")
    out.open(sources=sources)
    start = time.perf_counter()
    written = generate_walk_labels(model, data, ids, ws.cams, out, beta=p.beta, exp_times=p.exp_times,
                                   radius=p.radius, bg_threshold=p.bg_threshold, flip=p.flip, max_side=p.max_side,
                                   workers=p.workers, cam_md5=sources, device=device)
    out.finish(ids)
    log.info("random-walk labels of %d images in %s (%d walked now, %.1f s)", len(ids), out.folder, written,
             time.perf_counter() - start)
    scored = data.ids("score")
    scores = score_pseudo_labels(data, scored, out.folder)
    scores["note"] = data.describe_scoring("train", scored)
    write_json(ws.metrics / "random_walk.json", scores)
    if scores["miou"] is None:
        log.warning("random-walk labels not scored: none of the train images has a mask; they were written all "
                    "the same")
    else:
        log.info("random-walk label mIoU %.2f on every pixel (pixel acc %.1f; %s)", scores["miou_all_pixels"],
                 scores["pixel_acc"], scores["note"])
