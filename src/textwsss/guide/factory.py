"""One entry point that builds the matcher named by params `guide.kind`, and its spec: the same matcher rebuilt
without params.yaml (a segmentation checkpoint's class gate)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from textwsss.guide.base import Matcher

KINDS = ("open_clip", "imagenet")
SPEC_KEYS = {"kind", "arch", "pretrained", "prompt", "temperature", "synonyms", "imagenet_classes"}


def build_matcher(kind: str, *, arch: str = "ViT-B-32", pretrained: str | None = "openai",
                  prompt: str = "a photo of {}.", temperature: float = 1.0,
                  synonyms: Mapping[str, Sequence[str]] | None = None,
                  imagenet_classes: Mapping[str, Sequence[str | int]] | None = None,
                  device: str | torch.device = "cpu") -> Matcher:
    """A frozen matcher on `device`.

    kind: 'open_clip' (real CLIP; uses arch, pretrained = tag / local checkpoint path / 'none', prompt)
          or 'imagenet' (offline EfficientNet-Lite0 stand-in; uses temperature of its calibrated sigmoid and
          imagenet_classes, extra concept -> ImageNet classes entries).
    synonyms: extra names per concept (see Matcher.set_synonyms); default none.
    """
    if kind == "open_clip":
        from textwsss.guide.open_clip_matcher import OpenClipMatcher
        matcher: Matcher = OpenClipMatcher(arch=arch, pretrained=pretrained, prompt=prompt)
    elif kind == "imagenet":
        from textwsss.guide.imagenet_matcher import ImageNetMatcher
        matcher = ImageNetMatcher(temperature=temperature, imagenet_classes=imagenet_classes)
    else:
        raise ValueError(f"guide.kind: expected one of {KINDS}, got {kind!r}")
    if synonyms:
        matcher.set_synonyms(synonyms)
    return prepare_matcher(matcher, device)


def matcher_spec(params, classes) -> dict:
    """build_matcher's arguments for params `guide` and clims.synonyms (keyed by class names or prompt names,
    mapped here to the dataset's class prompts): plain data, so a checkpoint can rebuild the same matcher without
    params.yaml. A local checkpoint path is made absolute, so the spec works from any directory."""
    g = params.guide
    params.clims.check_classes(classes)
    pretrained = g.pretrained
    if pretrained and Path(pretrained).is_file():
        pretrained = str(Path(pretrained).resolve())
    return {"kind": g.kind, "arch": g.arch, "pretrained": pretrained, "prompt": g.prompt,
            "temperature": float(g.temperature),
            "synonyms": {classes.prompts[classes.index(k)]: list(v) for k, v in params.clims.synonyms.items()},
            "imagenet_classes": {k: list(v) for k, v in g.imagenet_classes.items()}}


def matcher_from_spec(spec: Mapping, device: str | torch.device = "cpu") -> Matcher:
    """The matcher of a matcher_spec() record."""
    unknown = set(spec) - SPEC_KEYS
    if unknown or "kind" not in spec:
        raise ValueError(f"matcher spec: expected the keys {sorted(SPEC_KEYS)}, got {sorted(spec)}")
    return build_matcher(**spec, device=device)


def matcher_from_params(params, classes, device: str | torch.device = "cpu") -> Matcher:
    """The matcher of params `guide`, with clims.synonyms attached to the dataset's class prompts; a class the
    matcher cannot score stops here with the message saying how to map it."""
    matcher = matcher_from_spec(matcher_spec(params, classes), device)
    matcher.check_concepts(list(classes.prompts), background=False)
    return matcher


def matcher_state(matcher: Matcher) -> dict | None:
    """What the matcher fitted beyond its spec (the stand-in's calibrated per-concept biases), or None."""
    bias = getattr(matcher, "_bias", None)
    if not bias:
        return None
    # the stand-in keys its biases by the concept's ImageNet class set (synonyms sharing classes share one)
    return {"bias": [[list(key), float(value)] for key, value in bias.items()]}


def restore_matcher_state(matcher: Matcher, state: Mapping | None) -> Matcher:
    """Puts back what matcher_state() recorded."""
    if state:
        if not hasattr(matcher, "_bias"):
            raise ValueError(f"matcher state: calibration biases recorded, but a {type(matcher).__name__} has none")
        matcher._bias = {tuple(int(i) for i in key): float(value) for key, value in state["bias"]}
    return matcher


def prepare_matcher(matcher: Matcher, device: str | torch.device = "cpu") -> Matcher:
    """A copy of `matcher` on `device`, channels-last, its BatchNorm folded into the convolutions: it is frozen
    for good, so that is exact up to float rounding (checked on a probe image batch by `for_inference`)."""
    from textwsss.models.runtime import for_inference, image_probe

    probe = image_probe(device, lambda m, x: m.encode_images(x))
    return for_inference(matcher, device, probe=probe).freeze()
