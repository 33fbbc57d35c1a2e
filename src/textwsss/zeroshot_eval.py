"""The zeroshot stage's library: dense zero-shot class maps of a split, scored like CAMs (same sweep)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .cam import labels_from_cams, sweep_thresholds
from .make_cams import working_size
from .viz import cam_figure, pick_figure_ids
from .voc import CLASS_NAMES, image_path, mask_path, read_image, read_mask, readable


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def evaluate_zeroshot(params, ids: Sequence[str], labels: dict[str, list[int]], device: str,
                      figures_dir: Path | None = None):
    from .guide.factory import build_matcher
    from .zeroshot import zeroshot_cams

    g = params.guide
    matcher = build_matcher(g.kind, arch=g.arch, pretrained=g.pretrained, prompt=g.prompt,
                            temperature=g.temperature, device=device)
    concepts = [readable(n) for n in CLASS_NAMES]
    background = matcher.check_concepts(params.zeroshot.background_words, background=True)
    root = params.data.root_path()
    shown = set(pick_figure_ids(ids, 6 if figures_dir else 0))

    def items():
        for i in tqdm(ids, desc="zeroshot", unit="img", disable=None):
            image = read_image(image_path(root, i))
            h, w = image.shape[:2]
            small = working_size(h, w, params.zeroshot.max_side)
            keys = labels[i]
            cams = zeroshot_cams(matcher, _resize(image, small) if small != (h, w) else image, keys, concepts,
                                 background)
            if small != (h, w) and len(keys):
                cams = F.interpolate(torch.from_numpy(cams)[None], size=(h, w), mode="bilinear",
                                     align_corners=False)[0].numpy()
            cams = cams.reshape(len(keys), h, w)
            gt = read_mask(mask_path(root, i))
            if i in shown:
                cam_figure(Path(figures_dir) / f"{i}.png", image, cams, keys, gt, labels_from_cams(cams, keys, 0.3))
            yield cams, keys, gt

    return sweep_thresholds(items(), params.zeroshot.thresholds.values())
