"""Which classes an image shows, from the matcher alone: the label-free half of the zero-shot baseline.

The segmentation model gets no image-level labels at test time; a baseline that is handed them (as the CAMs,
the pseudo-labels and the labelled zero-shot maps are) is not a fair comparison. Here the matcher decides: the
presence score of class k is its probability in a softmax of the matcher's logits over all class prompts and
the background words (so a class must beat both the other classes and the scenery), and a class is present
where its score reaches a threshold tuned on train images against their image-level labels (the supervision
weakly supervised training may use). An image whose classes all stay below it gets its best class: every image
of a segmentation benchmark shows at least one object.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def presence_scores(matcher, images: Sequence[np.ndarray], class_concepts: Sequence[str],
                    background_concepts: Sequence[str] = (), batch_size: int = 16) -> np.ndarray:
    """(N, K) softmax probability of each class prompt over [class prompts + background words], whole images."""
    concepts = list(class_concepts) + list(background_concepts)
    concept_feats = matcher.encode_concepts(concepts)
    out = []
    for start in range(0, len(images), batch_size):
        batch = [torch.from_numpy(np.ascontiguousarray(im)).permute(2, 0, 1).float().div(255.0)
                 for im in images[start:start + batch_size]]
        size = (matcher.input_size, matcher.input_size)
        x = torch.stack([F.interpolate(b[None], size=size, mode="bilinear", align_corners=False)[0] for b in batch])
        logits = matcher.logits(matcher.encode_images(x.to(matcher.device)), concept_feats)
        out.append(logits.float().softmax(dim=-1)[:, :len(class_concepts)].cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, len(class_concepts)), np.float32)


def predict_classes(scores: np.ndarray, threshold: float) -> list[list[int]]:
    """Per image, the classes scoring at least `threshold`, or its best class when none does."""
    return [[int(k) for k in np.flatnonzero(row >= threshold)] or [int(row.argmax())] for row in scores]


def class_f1(predicted: Sequence[Sequence[int]], labels: Sequence[Sequence[int]]) -> float:
    """Micro-averaged F1 of predicted class sets against image-level labels, in percent."""
    tp = sum(len(set(p) & set(t)) for p, t in zip(predicted, labels))
    n_pred, n_true = sum(map(len, predicted)), sum(map(len, labels))
    return 200.0 * tp / (n_pred + n_true) if n_pred + n_true else 100.0


def tune_presence_threshold(scores: np.ndarray, labels: Sequence[Sequence[int]],
                            grid: Sequence[float] = tuple(np.round(np.arange(0.02, 0.96, 0.02), 2))
                            ) -> tuple[float, float]:
    """(threshold, F1) maximising the class F1 on labelled images (the lowest threshold among ties)."""
    best = max(grid, key=lambda t: (class_f1(predict_classes(scores, t), labels), -t))
    return float(best), class_f1(predict_classes(scores, best), labels)
