"""pseudo_labels: dense-CRF refinement of the CAMs into label PNGs with ignore regions (METHODS.md section 3),
and their mIoU on the train images that have masks.

CAM files (written by make_cam): <cam_dir>/<id>.npz with `cams` float (C, H, W) in [0, 1] at image
resolution and `keys` int64 (C,), 0-based class indices (and the random walk's stride-4 `cams_s4`, unused here).
Output: <out_dir>/<id>.png, palette PNGs with labels 0..K and 255 (ignored when training).

Modes:
- 'irn'  (IRN / CLIMS): two label maps, background score = fg_threshold (fg confident) and = bg_threshold
  (bg confident), each refined by crf_from_labels; a pixel takes the fg-confident object label, is
  background where both maps say background, and 255 elsewhere.
- 'prob' (CLIP-ES): background = (1 - max_k CAM_k) ** prob_alpha, probabilities refined by crf_from_probs,
  pixels whose refined probability is below `confidence` are 255.
- 'none' (ablation): argmax over [threshold, CAMs], no CRF, no ignore region.

The images are spread over a pool of processes; every file depends only on its own inputs, so the output is
byte-identical for any number of workers, and an interrupted run resumes where it stopped (resumable.py). Each
label file records the hash of the CAM file it was made from (make_cam's manifest), so a CAM that make_cam
recomputed recomputes its label and no other; a CAM file whose bytes differ from make_cam's record (damaged since
it was written) stops the stage with its name instead of becoming a label.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from ..cam import cam_path, load_cam
from ..crf import CRFParams, crf_from_labels, crf_from_probs
from ..data.classes import IGNORE
from ..data.filecache import file_md5
from ..data.images import read_image, read_mask
from ..data.prepared import PreparedDataset
from ..io import label_png_bytes, write_bytes, write_json
from ..metrics import ConfusionMatrix
from .resumable import ResumableFolder, read_manifest, stamp_of
from .workspace import Workspace

log = logging.getLogger(__name__)

MODES = ("irn", "prob", "none")
#: Thread pools each worker limits to one thread so N workers use N cores, not N x cores.
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")


def _check_cams(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, image_id: str,
                num_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    cams = np.asarray(cams)
    keys = np.asarray(keys).reshape(-1).astype(np.int64)
    if cams.ndim != 3:
        raise ValueError(f"{image_id}: cams must be (C, H, W), got shape {cams.shape}")
    if keys.shape[0] != cams.shape[0]:
        raise ValueError(f"{image_id}: {keys.shape[0]} keys for {cams.shape[0]} CAMs")
    if keys.size and (keys.min() < 0 or (num_classes is not None and keys.max() >= num_classes)):
        raise ValueError(f"{image_id}: keys must be class indices 0..{(num_classes or 1) - 1}, got {keys.tolist()}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{image_id}: image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if image.shape[:2] != cams.shape[1:]:
        raise ValueError(f"{image_id}: image size {image.shape[:2]} differs from its CAM size {cams.shape[1:]}")
    # float16 CAMs can round just past 1; clipping keeps the background formulas in range
    return np.clip(cams.astype(np.float32), 0.0, 1.0), keys


def _argmax_with_background(cams: np.ndarray, background: float) -> np.ndarray:
    """Local labels (H, W): 0 where no CAM beats the constant background score, else 1 + CAM index."""
    bg = np.full((1, *cams.shape[1:]), background, dtype=np.float32)
    return np.concatenate([bg, cams], 0).argmax(0)


def pseudo_label(image: np.ndarray, cams: np.ndarray, keys: np.ndarray, mode: str = "irn", *,
                 fg_threshold: float = 0.30, bg_threshold: float = 0.05, threshold: float = 0.15,
                 prob_alpha: float = 1.0, confidence: float = 0.95, crf: CRFParams = CRFParams(),
                 gt_prob: float = 0.7, image_id: str = "<image>", num_classes: int | None = None) -> np.ndarray:
    """One pseudo-label map (H, W) uint8 of labels (keys + 1, background 0) and 255 (ignore).

    image: the original RGB image uint8 (H, W, 3); cams: (C, H, W) in [0, 1]; keys: (C,) class indices.
    fg_threshold / bg_threshold: mode 'irn' background scores of the fg-confident / bg-confident maps.
    threshold: mode 'none' background score. gt_prob: mode 'irn' label-unary confidence.
    prob_alpha: mode 'prob' exponent of the background (1 - max CAM) ** alpha (CLIP-ES default 1).
    confidence: mode 'prob' minimum refined probability to keep a pixel. crf: kernel settings.
    image_id: named in error messages; num_classes: when given, keys must lie below it.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cams, keys = _check_cams(image, cams, keys, image_id, num_classes)
    to_label = np.concatenate([[0], keys + 1]).astype(np.uint8)  # local index -> dataset label
    n_labels = len(to_label)
    if mode == "none":
        return to_label[_argmax_with_background(cams, threshold)]
    if mode == "irn":
        fg_conf = to_label[crf_from_labels(image, _argmax_with_background(cams, fg_threshold), n_labels, crf, gt_prob)]
        bg_conf = to_label[crf_from_labels(image, _argmax_with_background(cams, bg_threshold), n_labels, crf, gt_prob)]
        out = np.where(fg_conf > 0, fg_conf, IGNORE).astype(np.uint8)
        out[(fg_conf == 0) & (bg_conf == 0)] = 0
        return out
    if prob_alpha <= 0:
        raise ValueError(f"prob_alpha must be > 0, got {prob_alpha}")
    peak = cams.max(0) if len(keys) else np.zeros(cams.shape[1:], np.float32)
    probs = np.concatenate([((1.0 - peak) ** prob_alpha)[None], cams], 0)
    probs /= np.maximum(probs.sum(0, keepdims=True), 1e-12)
    refined = crf_from_probs(image, probs, crf)
    out = to_label[refined.argmax(0)]
    out[refined.max(0) < confidence] = IGNORE
    return out


def _label_one(task: tuple) -> tuple[str, int, str]:
    """Worker body: reads its own image and CAM file, writes the PNG, returns (id, size, md5) of the PNG."""
    image_file, image_id, cam_file, cam_md5, out_file, mode, kwargs = task
    if cam_md5 is not None and file_md5(cam_file) != cam_md5:
        raise ValueError(f"{cam_file}: its content differs from what make_cam recorded in its manifest (damaged "
                         f"since it was written, e.g. by a failed copy or a damaged `dvc pull`); make_cam checks "
                         f"and recomputes it: `dvc repro -s -f make_cam`")
    cams, keys = load_cam(cam_file)
    data = label_png_bytes(pseudo_label(read_image(image_file), cams, keys, mode, image_id=image_id, **kwargs))
    write_bytes(out_file, data)
    return image_id, len(data), hashlib.md5(data).hexdigest()


def cam_hashes(cam_dir: Path, ids: Sequence[str]) -> dict[str, str]:
    """{id: md5 of its CAM file} from make_cam's manifest (no file is read again)."""
    manifest = read_manifest(cam_dir)
    # the manifest is keyed by the path below the folder: ids of the tags layout may name subfolders ("a/x")
    key = {i: cam_path(cam_dir, i).relative_to(cam_dir).as_posix() for i in ids}
    missing = [i for i in ids if key[i] not in manifest]
    if missing:
        raise ValueError(f"{cam_dir}: make_cam's manifest lists no CAM file for {len(missing)} ids "
                         f"({', '.join(missing[:10])}); run `dvc repro -s -f make_cam`")
    return {i: manifest[key[i]][1] for i in ids}


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Spawned workers inherit os.environ at start: one BLAS/OpenMP thread each, restored afterwards."""
    saved = {k: os.environ.get(k) for k in _THREAD_ENV}
    os.environ.update({k: "1" for k in _THREAD_ENV})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def generate_pseudo_labels(data: PreparedDataset, ids: Sequence[str], cam_dir: Path, out: ResumableFolder | Path,
                           *, workers: int = 0, mode: str = "irn", fg_threshold: float = 0.30,
                           bg_threshold: float = 0.05, threshold: float = 0.15, prob_alpha: float = 1.0,
                           confidence: float = 0.95, crf: CRFParams = CRFParams(), gt_prob: float = 0.7,
                           cam_md5: dict[str, str] | None = None) -> int:
    """Writes the pseudo-label PNG of every id the folder lacks (see pseudo_label for the knobs); returns how
    many it wrote. `out`: a ResumableFolder, or a plain folder (every file rewritten, nothing recorded).
    cam_md5: {id: md5 of its CAM file} (cam_hashes): each CAM file is checked against it before use, and each
    label records it as its source.

    workers: 0 = one process per core (os.cpu_count()); 1 = serial in this process; > 1 = a spawn Pool.
    Pydensecrf runs single-threaded; workers are started with OMP/BLAS thread counts of 1 so they do
    not oversubscribe the cores.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: one per core), got {workers}")
    folder = out if isinstance(out, ResumableFolder) else None
    if folder is None:
        out = ResumableFolder(Path(out), {}, ".png")
    cam_md5 = cam_md5 or {}
    cam_dir = Path(cam_dir)
    ids = list(ids)
    missing_cams = [i for i in ids if not cam_path(cam_dir, i).is_file()]
    if missing_cams:
        raise FileNotFoundError(f"{cam_dir}: no CAM file for {len(missing_cams)} ids: {', '.join(missing_cams[:20])}")
    kwargs = dict(fg_threshold=fg_threshold, bg_threshold=bg_threshold, threshold=threshold, prob_alpha=prob_alpha,
                  confidence=confidence, crf=crf, gt_prob=gt_prob, num_classes=data.classes.num_classes)
    todo = [i for i in ids if not out.done(i)]
    tasks = [(data.image_path(i), i, cam_path(cam_dir, i), cam_md5.get(i), out.path(i), mode, kwargs) for i in todo]
    workers = min(workers or os.cpu_count() or 1, max(len(tasks), 1))
    log.info("pseudo-labels (%s) for %d images (%d already written) with %d worker(s) -> %s", mode, len(ids),
             len(ids) - len(todo), workers, out.folder)
    progress = dict(total=len(ids), initial=len(ids) - len(todo), desc=f"pseudo-labels ({mode})", unit="img",
                    disable=None)

    def record(written: tuple[str, int, str]) -> None:
        # the parent records what the workers wrote: one journal per process, never shared
        if folder is not None:
            image_id, size, md5 = written
            folder.record(image_id, size, md5, source=cam_md5.get(image_id))

    if workers <= 1:
        for task in tqdm(tasks, **progress):
            record(_label_one(task))
        return len(tasks)
    # spawn: safe when the parent holds torch/OpenMP threads, and the same on every platform
    with _single_threaded_children(), multiprocessing.get_context("spawn").Pool(workers) as pool:
        for written in tqdm(pool.imap_unordered(_label_one, tasks, chunksize=1), **progress):
            record(written)
    return len(tasks)


def score_pseudo_labels(data: PreparedDataset, ids: Sequence[str], label_dir: Path) -> dict:
    """Scores pseudo-labels against the masks of `ids`.

    Returns {"miou" (percent over the labels, labels absent from both prediction and mask excluded; None without
    ids), "ignore_ratio" (fraction of pixels with a valid mask label that the pseudo-label marks 255),
    "per_class" (IoU in percent by label name, None when absent), "pixel_acc", "absent", "n_images",
    "miou_all_pixels", "miou_irn_convention"}. Pixels the pseudo-label ignores are left out of "miou" (they are not
    used in training either), so "miou" scores only the pixels the labels commit to. "miou_all_pixels" scores every
    pixel with a mask label, an ignored one as a miss of its true class: comparable with full-coverage labels (IRN's
    random walk, CLIMS's published numbers) and with a segmentation network's mIoU. "miou_irn_convention" scores an
    ignored pixel as background, as IRN's eval_sem_seg.py does (`cls_labels[cls_labels == 255] = 0`): the number
    published tables give for seeds with ignore regions. For full-coverage labels the three are equal.
    """
    label_dir = Path(label_dir)
    ids = list(ids)
    missing = [i for i in ids if not (label_dir / f"{i}.png").is_file()]
    if missing:
        raise FileNotFoundError(f"{label_dir}: no pseudo-label PNG for {len(missing)} ids: {', '.join(missing[:20])}")
    if not ids:
        return {"miou": None, "ignore_ratio": None, "miou_all_pixels": None, "miou_irn_convention": None,
                "per_class": {}, "pixel_acc": None, "absent": [], "n_images": 0}
    names = list(data.classes.label_names)
    k = len(names)
    # one extra prediction column for ignored pixels: they count as misses of their true class, not as any
    # class's false positives; the matrix without it is the committed-pixel one
    everywhere = ConfusionMatrix(names + ["(ignored)"])
    for image_id in tqdm(ids, desc="score pseudo-labels", unit="img", disable=None):
        pred = read_mask(label_dir / f"{image_id}.png")
        gt = data.read_mask(image_id)
        if pred.shape != gt.shape:
            raise ValueError(f"{image_id}: pseudo-label size {pred.shape} differs from ground truth {gt.shape}")
        everywhere.update(np.where(pred == IGNORE, k, pred), gt)
    matrix = ConfusionMatrix(names)
    matrix.matrix = everywhere.matrix[:k, :k].copy()
    summary = matrix.summary()
    valid, ignored = int(everywhere.matrix.sum()), int(everywhere.matrix[:, k].sum())
    iou_all = everywhere.iou()[:k]
    present = ~np.isnan(iou_all)
    # IRN's convention: the ignored column joins the background column (label 0)
    as_background = ConfusionMatrix(names)
    as_background.matrix = everywhere.matrix[:k, :k].copy()
    as_background.matrix[:, 0] += everywhere.matrix[:k, k]
    return {"miou": summary["miou"], "ignore_ratio": ignored / valid if valid else 0.0,
            "miou_all_pixels": float(100 * iou_all[present].mean()) if present.any() else 0.0,
            "miou_irn_convention": as_background.summary()["miou"],
            "per_class": summary["per_class"], "pixel_acc": summary["pixel_acc"], "absent": summary["absent"],
            "n_images": len(ids)}


def run(params, ws: Workspace) -> None:
    p = params.pseudo_labels
    data = ws.dataset(params)
    ids = data.ids("train")
    knobs = p.model_dump(exclude={"workers"})
    # the CAMs are not in the stamp: each label is keyed to its own CAM file's hash instead
    stamp = stamp_of({"pseudo_labels": knobs}, [ws.prepared / "dataset.json"])
    sources = cam_hashes(ws.cams, ids)
    out = ResumableFolder(ws.pseudo_labels, stamp, ".png")
    out.open(sources=sources)
    generate_pseudo_labels(data, ids, ws.cams, out, workers=p.workers, mode=p.mode, fg_threshold=p.fg_threshold,
                           bg_threshold=p.bg_threshold, threshold=p.threshold, prob_alpha=p.prob_alpha,
                           confidence=p.confidence, gt_prob=p.gt_prob, crf=p.crf, cam_md5=sources)
    out.finish(ids)
    scored = data.ids("score")
    scores = score_pseudo_labels(data, scored, ws.pseudo_labels)
    scores["note"] = data.describe_scoring("train", scored)
    write_json(ws.metrics / "pseudo_labels.json", scores)
    if scores["miou"] is None:
        log.warning("pseudo-labels not scored: none of the train images has a mask; they were written all the same")
    else:
        log.info("pseudo-label mIoU %.2f on the pixels they label, ignored %.1f%% of pixels; %.2f on every pixel, "
                 "%.2f with an ignored pixel as background (IRN) (%s)", scores["miou"], 100 * scores["ignore_ratio"],
                 scores["miou_all_pixels"], scores["miou_irn_convention"], scores["note"])


def cams_from_mask(mask: np.ndarray, *, downscale: int = 8, blur_sigma: float = 4.0, shift: tuple[int, int] = (3, 3),
                   dtype=np.float16) -> tuple[np.ndarray, np.ndarray]:
    """CAM-like maps from a ground-truth mask, degraded like real CAMs (for tests and the benchmark).

    Each present class's one-hot map is averaged down by `downscale`, upsampled bilinearly, blurred with a
    Gaussian of `blur_sigma` pixels, shifted by `shift` (rows, cols; edges repeated) and max-normalised.
    Returns (cams (C, H, W) `dtype`, keys (C,) int64) in the make_cam file format.
    """
    from scipy import ndimage

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if downscale < 1:
        raise ValueError(f"downscale must be >= 1, got {downscale}")
    h, w = mask.shape
    keys = np.asarray([int(v) - 1 for v in np.unique(mask) if 0 < v < IGNORE], dtype=np.int64)
    cams = np.zeros((len(keys), h, w), dtype=np.float32)
    for c, k in enumerate(keys):
        onehot = (mask == k + 1).astype(np.float32)
        if downscale > 1:
            small = ndimage.zoom(onehot, 1.0 / downscale, order=1, grid_mode=True, mode="nearest")
            onehot = ndimage.zoom(small, (h / small.shape[0], w / small.shape[1]), order=1, grid_mode=True,
                                  mode="nearest")[:h, :w]
        if blur_sigma > 0:
            onehot = ndimage.gaussian_filter(onehot, blur_sigma)
        onehot = ndimage.shift(onehot, shift, order=0, mode="nearest")
        cams[c] = np.clip(onehot, 0, None) / max(float(onehot.max()), 1e-6)
    return cams.astype(dtype), keys
