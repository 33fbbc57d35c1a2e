"""TAS end to end: proposals -> scores (V, P, N) -> spatial rectifier -> one mask per expression."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from textwsss.tas.captioner import Captioner
from textwsss.tas.nouns import target_noun
from textwsss.tas.proposals import MaskProposer
from textwsss.tas.rectifier import direction_of, rectify
from textwsss.tas.scoring import (CropFeatures, accepts_free_text, caption_negatives, encode_crops, score_masks,
                                  vocabulary_negatives)

log = logging.getLogger(__name__)


def _known(matcher, concepts: Sequence[str]) -> list[str]:
    """The concepts the matcher can encode (quietly; closed vocabularies refuse some)."""
    out = []
    for c in dict.fromkeys(concepts):
        try:
            matcher.encode_concepts([c])
            out.append(c)
        except ValueError:
            continue
    return out


@dataclass
class PreparedImage:
    """One image's proposals and encoded crops, shared by all its expressions."""

    masks: np.ndarray  # (M,H,W) bool
    crops: CropFeatures


def prepare_image(image: np.ndarray, proposer: MaskProposer, matcher, *, extra_label_map: np.ndarray | None = None,
                  margin: float = 0.1, fill: str = "zero") -> PreparedImage:
    """Proposals of the image (plus extra label-map components) and their crops' features."""
    masks = (proposer.propose(image) if extra_label_map is None
             else proposer.propose(image, extra_label_map=extra_label_map))
    return PreparedImage(masks, encode_crops(image, masks, matcher, margin, fill))


def segment_expression(image: np.ndarray, expression: str, proposer: MaskProposer, matcher, *,
                       captioner: Captioner | None = None, vocabulary: Sequence[str],
                       alpha: float = 0.1, lam: float = 0.1, use_rectifier: bool = True,
                       use_negatives: bool = True, extra_label_map: np.ndarray | None = None,
                       negative_top_k: int = 3, negative_threshold: float = 0.5,
                       margin: float = 0.1, fill: str = "zero",
                       prepared: PreparedImage | None = None) -> tuple[np.ndarray, dict]:
    """(mask (H,W) bool, info) for one referring expression on one image.

    vocabulary: concepts the matcher knows (VOC class names + background words); gives the target
      noun (and, without a captioner, the negative candidates). Open-vocabulary matchers score the
      full expression; a closed-vocabulary matcher scores the target noun instead.
    alpha, lam: weights of the P-score and N-score (METHODS: 0.1 and 0.1).
    use_rectifier: apply the spatial rectifier when the expression holds a direction word.
    use_negatives: compute the N-score (negatives from the whole-image caption when a captioner is
      given, else the vocabulary concepts scoring >= negative_threshold on the whole image, at most
      negative_top_k, never the target or its synonyms).
    extra_label_map: a trained model's (H,W) label map whose components are added as proposals.
    margin, fill: crop margin (fraction of the box) and fill of the masked-out pixels ('zero'|'mean').
    prepared: `prepare_image(...)` of this image, to reuse proposals and crop features across the
      image's expressions (the proposer and extra_label_map are then not used).
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"expression: expected a non-empty string, got {expression!r}")
    if prepared is None:
        prepared = prepare_image(image, proposer, matcher, extra_label_map=extra_label_map, margin=margin, fill=fill)
    masks = prepared.masks
    try:
        target = target_noun(expression, vocabulary)
    except ValueError:
        target = None
    open_vocabulary = accepts_free_text(matcher, expression)
    if open_vocabulary:
        query = expression
    elif target is not None:
        query = target
    else:
        raise ValueError(f"expression {expression!r}: the matcher has a closed vocabulary and the expression "
                         f"names none of its concepts {list(vocabulary)}")
    negatives: list[str] = []
    caption = None
    if use_negatives:
        reference = target or expression
        if captioner is not None:
            caption = captioner.caption(image)
            negatives = caption_negatives(caption, reference, None if open_vocabulary else _known(matcher, vocabulary))
        else:
            negatives = vocabulary_negatives(image, matcher, _known(matcher, vocabulary), reference,
                                             negative_top_k, negative_threshold)
    scores = score_masks(image, masks, query, matcher, negatives=negatives, captioner=captioner,
                         alpha=alpha, lam=lam, crops=prepared.crops)
    direction = direction_of(expression) if use_rectifier else None
    index = rectify(masks, scores["s"], direction)
    info = {"query": query, "target": target, "negatives": negatives, "caption": caption,
            "direction": direction, "index": index, "num_masks": int(len(masks)),
            "score": float(scores["s"][index]), "s_v": float(scores["s_v"][index]),
            "p_score": scores["s_p"] is not None, "n_score": scores["s_n"] is not None}
    return masks[index].copy(), info
