"""The text-image matcher interface shared by CLIMS training, the zero-shot baseline and TAS.

A matcher is frozen (eval mode, no parameter requires grad) but differentiable with respect to
its input images, so losses can push gradients through it into a CAM network. Images come in as
float RGB in [0, 1] of any size; each matcher resizes and normalises them its own way. Concepts are
raw names ('cat', 'dining table', 'river'); a matcher applies its own prompt template.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

#: Similarities are clamped into this open interval so that log(s) and log(1 - s) stay finite.
SIM_MIN = 1e-4
SIM_MAX = 0.9999


class Matcher(torch.nn.Module):
    """Frozen image/concept scorer. Subclasses hold `mean`/`std` buffers (their input normalisation, if any) and
    implement `_encode_normalised`, `_encode_concept_batch`,
    `similarity` and `logits`; the caching, resizing and freezing live here."""

    input_size: int = 224

    def __init__(self) -> None:
        super().__init__()
        self._concept_cache: dict[str, Tensor] = {}
        self._synonyms: dict[str, tuple[str, ...]] = {}  # concept -> extra names

    # ---- freezing -------------------------------------------------------------------------
    def freeze(self) -> "Matcher":
        """Eval mode and requires_grad=False on every parameter (gradients still reach the inputs)."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "Matcher":
        # A matcher never trains: keep batch-norm statistics and dropout fixed even if a parent
        # module calls .train() on everything it holds.
        return super().train(False)

    @property
    def device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")

    def _apply(self, fn, *args, **kwargs):
        # Moving the matcher (.to(device)) must move the cached concept features too.
        out = super()._apply(fn, *args, **kwargs)
        self._concept_cache = {k: fn(v) for k, v in self._concept_cache.items()}
        return out

    # ---- images ---------------------------------------------------------------------------
    def resize(self, images: Tensor) -> Tensor:
        """(N,3,H,W) in [0,1] -> (N,3,S,S) with S = input_size (bilinear), validated."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected a float tensor (N,3,H,W), got shape {tuple(images.shape)}")
        images = images.to(self.device, torch.float32)
        if images.shape[-2:] != (self.input_size, self.input_size):
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                                   align_corners=False)
        return images

    def normalise(self, images: Tensor) -> Tensor:
        """RGB in [0,1] -> the matcher's own input normalisation (its `mean`/`std` buffers; none: as is)."""
        mean, std = getattr(self, "mean", None), getattr(self, "std", None)
        return images if mean is None else (images - mean) / std

    def encode_images(self, images: Tensor) -> Tensor:
        """(N,3,H,W) float RGB in [0,1] -> (N,D) features (resized and normalised inside)."""
        return self._encode_normalised(self.normalise(self.resize(images)))

    def encode_prenormalised(self, images: Tensor) -> Tensor:
        """(N,3,H,W) images the caller has normalised itself -> (N,D) features (only resized here). CLIMS's
        official code feeds CLIP the ImageNet-normalised image times the map this way."""
        return self._encode_normalised(self.resize(images))

    def _encode_normalised(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    # ---- concepts -------------------------------------------------------------------------
    def set_synonyms(self, mapping: Mapping[str, Sequence[str]]) -> None:
        """Extra names per concept (params clims.synonyms, keyed by the classes' prompt names by the caller),
        e.g. {'tv monitor': ['television', 'monitor']}.

        The mapping replaces any earlier one. Afterwards a concept is encoded from all its names; how the names
        are combined is up to the matcher (`_encode_concept_batch` gets them from `concept_names`). Cached
        features of the concepts whose names changed are dropped.
        """
        new: dict[str, tuple[str, ...]] = {}
        for key, names in mapping.items():
            if isinstance(names, str) or not all(isinstance(n, str) and n.strip() for n in names):
                raise ValueError(f"clims.synonyms[{key!r}]: expected a list of non-empty names, got {names!r}")
            extra = [n.strip() for n in names if n.strip().lower() != key.strip().lower()]
            new[key] = tuple(dict.fromkeys(new.get(key, ()) + tuple(extra)))
        new = {c: names for c, names in self._filter_synonyms(new).items() if names}
        changed = {c for c in set(new) | set(self._synonyms) if new.get(c) != self._synonyms.get(c)}
        self._synonyms = new
        for concept in list(self._concept_cache):
            if concept in changed:
                del self._concept_cache[concept]
        if new:
            log.info("concept synonyms: %s", {c: list(n) for c, n in new.items()})

    def _filter_synonyms(self, synonyms: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        """Hook for closed-vocabulary matchers to drop names they cannot encode."""
        return synonyms

    def concept_names(self, concept: str) -> list[str]:
        """[concept, *its synonyms]."""
        return [concept, *self._synonyms.get(concept, ())]

    def encode_concepts(self, concepts: Sequence[str]) -> Tensor:
        """(M,D) features of the concepts; each concept string is computed once and cached."""
        if isinstance(concepts, str):
            raise ValueError("concepts: expected a sequence of strings, got a single string")
        missing = [c for c in dict.fromkeys(concepts) if c not in self._concept_cache]
        if missing:
            with torch.no_grad():
                feats = self._encode_concept_batch(missing)
            for name, f in zip(missing, feats):
                self._concept_cache[name] = f.detach()
        if not concepts:
            raise ValueError("concepts: expected at least one concept")
        return torch.stack([self._concept_cache[c] for c in concepts])

    def _encode_concept_batch(self, concepts: list[str]) -> Tensor:
        raise NotImplementedError

    def check_concepts(self, concepts: Sequence[str], *, background: bool) -> list[str]:
        """The concepts this matcher can score. Open-vocabulary matchers accept everything."""
        return list(concepts)

    # ---- scores ---------------------------------------------------------------------------
    def similarity(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        """(N,M) scores in [SIM_MIN, SIM_MAX]."""
        raise NotImplementedError

    def logits(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        """(N,M) unbounded scores for softmax / GradCAM."""
        raise NotImplementedError

    def score(self, images: Tensor, concepts: Sequence[str]) -> Tensor:
        return self.similarity(self.encode_images(images), self.encode_concepts(concepts))

    def gradcam_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(feature map (N,C,h,w) in the graph, image features (N,D)) for GradCAM."""
        raise NotImplementedError(f"{type(self).__name__} does not support GradCAM")
