"""zeroshot: the training-free baseline: dense class maps from the text-image matcher alone (GradCAM on a
softmax over the image's classes and the background words, as CLIP-ES does), scored on the val images that have
masks, with the same background-threshold sweep as the CAMs."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..cam import labels_from_cams, sweep_thresholds
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


def evaluate_zeroshot(params, data: PreparedDataset, ids: Sequence[str], device: str,
                      figures_dir: Path | None = None):
    matcher = matcher_from_params(params, data.classes, device)
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


def run(params, ws: Workspace) -> None:
    data = ws.dataset(params)
    scored = data.with_masks(data.ids("val"))
    best, curve = evaluate_zeroshot(params, data, scored, resolve_device(params.device), figures_dir=ws.figures("zeroshot"))
    best["note"] = data.describe_scoring("val", scored)
    write_json(ws.metrics / "zeroshot.json", best)
    write_json(ws.plots / "zeroshot_threshold.json", curve)
    if best["miou"] is None:
        log.warning("zero-shot baseline not scored: none of the val images has a mask")
    else:
        log.info("zero-shot mIoU %.2f at threshold %.2f (%s)", best["miou"], best["threshold"], best["note"])
