"""One-vs-rest AUC of the imagenet stand-in matcher on a VOC root (whole image, 224 px).

For each of the 20 VOC classes, the images are ranked by the probability mass on the class's
ImageNet classes (the matcher's logits); AUC = probability that a random image containing the
class outranks a random image without it. Prints per-class AUC and the mean.

    python benchmarks/imagenet_matcher_auc.py [--root ../shared/voc-mini] [--split train] [--n 0] [--quick]
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from _voc import voc_root, voc_subset

from textwsss.data.transforms import to_tensor
from textwsss.guide.imagenet_matcher import ImageNetMatcher

log = logging.getLogger(__name__)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count one half)."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="VOC-layout data root (default ../shared/voc-mini)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--n", type=int, default=0, help="the first n images of the split (0: all)")
    parser.add_argument("--quick", action="store_true", help="the first 6 images: checks it runs")
    args = parser.parse_args()
    if args.quick:
        args.n = 6
    logging.basicConfig(level=logging.INFO)
    root = voc_root(args.root)
    torch.manual_seed(0)
    matcher = ImageNetMatcher()
    data = voc_subset(root, args.split, args.n)
    concepts = list(data.classes.prompts)
    ids = data.ids("train")
    scores, labels = [], np.zeros((len(ids), len(concepts)), dtype=bool)
    concept_feats = matcher.encode_concepts(concepts)
    with torch.no_grad():
        for n, image_id in enumerate(tqdm(ids, desc="images", disable=None)):
            image = to_tensor(data.read_image(image_id))[None]
            scores.append(matcher.logits(matcher.encode_images(image), concept_feats)[0].numpy())
            labels[n, data.labels[image_id]] = True
    scores_arr = np.stack(scores)
    aucs = {c: auc(scores_arr[:, k], labels[:, k]) for k, c in enumerate(concepts)}
    for c, a in sorted(aucs.items(), key=lambda kv: -np.nan_to_num(kv[1])):
        print(f"{c:12s} AUC {a:.3f}  (positives {labels[:, concepts.index(c)].sum()})")
    print(f"mean AUC over {np.isfinite(list(aucs.values())).sum()} classes ({args.split}, {len(ids)} images): "
          f"{np.nanmean(list(aucs.values())):.3f}")


if __name__ == "__main__":
    main()
