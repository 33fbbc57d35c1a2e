"""Which vocabulary concept a referring expression names."""
from __future__ import annotations

import re
from collections.abc import Sequence

from textwsss.tas.captioner import SYNONYMS


def _spellings(concept: str) -> set[str]:
    spelled = {concept.lower(), concept.lower().replace("_", " ")}
    return spelled | {s + "s" for s in spelled} | {s + "es" for s in spelled}


def target_noun(expression: str, vocabulary: Sequence[str]) -> str:
    """The vocabulary entry the expression names: the longest entry (singular or plural) contained in it as
    whole words; failing that, an entry whose synonym (captioner.SYNONYMS, e.g. 'man' -> person) occurs.
    ValueError if none."""
    text = " " + " ".join(re.findall(r"[a-z]+", expression.lower())) + " "
    best, best_len = None, 0
    for concept in vocabulary:
        for spelling in _spellings(concept):
            if f" {spelling} " in text and len(spelling) > best_len:
                best, best_len = concept, len(spelling)
    if best is not None:
        return best
    for concept in vocabulary:
        if any(f" {w} " in text for w in SYNONYMS.get(concept.lower(), ())):
            return concept
    raise ValueError(f"expression {expression!r}: names none of the vocabulary concepts {list(vocabulary)}")
