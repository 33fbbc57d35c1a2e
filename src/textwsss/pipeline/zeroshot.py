"""zeroshot: the training-free baseline: dense class maps from the text-image matcher alone (GradCAM on a
softmax over the image's classes and the background words, as CLIP-ES does), scored on the val images that have
masks. Two variants:
- labelled (zeroshot.json's top level, comparable with the CAMs): each val image's own image-level labels pick
  its classes, and the background threshold is the best of a sweep on val itself;
- label_free (zeroshot.json's "label_free", comparable with the final segmentation model, which sees no labels
  either): the matcher picks the classes as eval_seg's class gate does (zeroshot/class_gate.py), and both its
  presence threshold and the background threshold are tuned on train images, then applied to val unchanged.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..cam import labels_from_cams, sweep_thresholds
from ..metrics import ConfusionMatrix
from ..zeroshot.class_gate import ClassGate
from ..zeroshot.presence import class_f1
from ..data.images import working_size
from ..data.prepared import PreparedDataset
from ..guide.factory import matcher_from_params
from ..io import write_json
from ..params import resolve_device
from ..viz import cam_figure, pick_figure_ids
from ..zeroshot.gradcam import zeroshot_cams
from .workspace import Workspace

log = logging.getLogger(__name__)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def dense_maps(matcher, data: PreparedDataset, image_id: str, keys: Sequence[int], background: Sequence[str],
               max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, maps (len(keys), H, W)) of one image, computed at the working size, returned at the image size."""
    image = data.read_image(image_id)
    h, w = image.shape[:2]
    small = working_size(h, w, max_side)
    cams = zeroshot_cams(matcher, _resize(image, small) if small != (h, w) else image, keys,
                         list(data.classes.prompts), background)
    if small != (h, w) and len(keys):
        cams = F.interpolate(torch.from_numpy(cams)[None], size=(h, w), mode="bilinear",
                             align_corners=False)[0].numpy()
    return image, cams.reshape(len(keys), h, w)


def evaluate_zeroshot(params, matcher, data: PreparedDataset, ids: Sequence[str], figures_dir: Path | None = None):
    """The labelled variant on `ids`: (best summary over the background-threshold sweep, the curve)."""
    background = matcher.check_concepts(params.zeroshot.background_words, background=True)
    shown = set(pick_figure_ids(ids, 6 if figures_dir else 0))

    def items():
        for i in tqdm(ids, desc="zeroshot", unit="img", disable=None):
            keys = data.labels[i]
            image, cams = dense_maps(matcher, data, i, keys, background, params.zeroshot.max_side)
            gt = data.read_mask(i)
            if i in shown:
                cam_figure(Path(figures_dir) / f"{i}.png", image, cams, keys, gt, labels_from_cams(cams, keys, 0.3),
                           data.classes)
            yield cams, keys, gt

    return sweep_thresholds(items(), params.zeroshot.thresholds.values(), data.classes.label_names)


def evaluate_label_free(params, matcher, data: PreparedDataset, tune_ids: Sequence[str],
                        val_ids: Sequence[str]) -> dict:
    """The label-free variant: thresholds tuned on `tune_ids` (train, with masks), scores on `val_ids`."""
    # the matcher picks the classes exactly as eval_seg's class gate does, with the same threshold tuning
    gate = ClassGate.tune(matcher, list(data.classes.prompts), params.zeroshot.background_words,
                          (data.read_image(i) for i in tqdm(tune_ids, desc="presence (train)", unit="img",
                                                            disable=None)),
                          [data.labels[i] for i in tune_ids])
    background, max_side = gate.background_concepts, params.zeroshot.max_side

    def train_items():
        for i in tqdm(tune_ids, desc="zeroshot label-free (train)", unit="img", disable=None):
            keys = gate.classes(data.read_image(i))
            _, cams = dense_maps(matcher, data, i, keys, background, max_side)
            yield cams, keys, data.read_mask(i)

    tuned, _ = sweep_thresholds(train_items(), params.zeroshot.thresholds.values(), data.classes.label_names)
    matrix = ConfusionMatrix(data.classes.label_names)
    val_predicted, val_labels = [], []
    for i in tqdm(val_ids, desc="zeroshot label-free (val)", unit="img", disable=None):
        keys = gate.classes(data.read_image(i))
        _, cams = dense_maps(matcher, data, i, keys, background, max_side)
        matrix.update(labels_from_cams(cams, keys, tuned["threshold"]), data.read_mask(i))
        val_predicted.append(keys)
        val_labels.append(data.labels[i])
    summary = matrix.summary()
    return {"miou": summary["miou"], "pixel_acc": summary["pixel_acc"], "per_class": summary["per_class"],
            "presence_threshold": gate.threshold, "background_threshold": tuned["threshold"],
            "class_f1_train": gate.class_f1_train, "class_f1_val": class_f1(val_predicted, val_labels),
            "n_tune_images": len(tune_ids), "n_images": len(val_ids)}


def tuning_ids(data: PreparedDataset, n: int) -> list[str]:
    """An evenly spaced, fixed choice of `n` train images with masks (0: all of them)."""
    scored = data.ids("score")
    return scored if n <= 0 or n >= len(scored) else pick_figure_ids(scored, n)


def label_free_skip_reason(data: PreparedDataset, scored: Sequence[str], tune: Sequence[str]) -> str:
    """Why the label-free variant cannot run: it tunes its background threshold on train masks and is scored on
    val masks."""
    if not tune:
        return (f"it tunes its background threshold on train images with masks, and none of the "
                f"{len(data.ids('train'))} train images has one")
    return f"none of the {len(data.ids('val'))} val images has a mask to score it on"


def run(params, ws: Workspace) -> None:
    data = ws.dataset(params)
    matcher = matcher_from_params(params, data.classes, resolve_device(params.device))
    scored = data.with_masks(data.ids("val"))
    best, curve = evaluate_zeroshot(params, matcher, data, scored, figures_dir=ws.figures("zeroshot"))
    best["note"] = data.describe_scoring("val", scored) + "; classes from each image's labels, threshold from val"
    tune = tuning_ids(data, params.zeroshot.tune_images)
    if scored and tune:
        best["label_free"] = evaluate_label_free(params, matcher, data, tune, scored)
        log.info("label-free zero-shot mIoU %.2f (classes picked by the matcher: F1 %.1f on val)",
                 best["label_free"]["miou"], best["label_free"]["class_f1_val"])
    else:
        reason = label_free_skip_reason(data, scored, tune)
        best["label_free"] = {"skipped": reason}
        log.warning("label-free zero-shot baseline skipped: %s", reason)
    write_json(ws.metrics / "zeroshot.json", best)
    write_json(ws.plots / "zeroshot_threshold.json", curve)
    if best["miou"] is None:
        log.warning("zero-shot baseline not scored: none of the val images has a mask")
    else:
        log.info("zero-shot mIoU %.2f at threshold %.2f (%s)", best["miou"], best["threshold"], best["note"])
