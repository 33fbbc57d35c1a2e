"""One-vs-rest AUC of the imagenet stand-in matcher on a VOC root (whole image, 224 px).

For each of the 20 VOC classes, the images are ranked by the probability mass on the class's
ImageNet classes (the matcher's logits); AUC = probability that a random image containing the
class outranks a random image without it. Prints per-class AUC and the mean.

    python benchmarks/imagenet_matcher_auc.py [--root /work/shared/voc-mini] [--split train]
"""
from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from tqdm import tqdm

from textwsss.guide.imagenet_matcher import ImageNetMatcher
from textwsss.voc import CLASS_NAMES, image_path, labels_of_mask, mask_path, read_image, read_mask, read_split

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
    parser.add_argument("--root", default="/work/shared/voc-mini")
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.manual_seed(0)
    matcher = ImageNetMatcher()
    concepts = list(CLASS_NAMES)
    ids = read_split(args.root, args.split)
    scores, labels = [], np.zeros((len(ids), len(concepts)), dtype=bool)
    concept_feats = matcher.encode_concepts(concepts)
    with torch.no_grad():
        for n, image_id in enumerate(tqdm(ids, desc="images")):
            image = torch.from_numpy(read_image(image_path(args.root, image_id))).permute(2, 0, 1)[None] / 255.0
            scores.append(matcher.logits(matcher.encode_images(image), concept_feats)[0].numpy())
            labels[n, labels_of_mask(read_mask(mask_path(args.root, image_id)))] = True
    scores_arr = np.stack(scores)
    aucs = {c: auc(scores_arr[:, k], labels[:, k]) for k, c in enumerate(concepts)}
    for c, a in sorted(aucs.items(), key=lambda kv: -np.nan_to_num(kv[1])):
        print(f"{c:12s} AUC {a:.3f}  (positives {labels[:, concepts.index(c)].sum()})")
    print(f"mean AUC over {np.isfinite(list(aucs.values())).sum()} classes ({args.split}, {len(ids)} images): "
          f"{np.nanmean(list(aucs.values())):.3f}")


if __name__ == "__main__":
    main()
