"""One entry point that builds the matcher named by params `guide.kind`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from textwsss.guide.base import Matcher

KINDS = ("open_clip", "imagenet")


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


def matcher_from_params(params, classes, device: str | torch.device = "cpu") -> Matcher:
    """The matcher of params `guide`, with clims.synonyms (keyed by class names or prompt names) attached to the
    dataset's class prompts; a class the matcher cannot score stops here with the message saying how to map it."""
    g = params.guide
    params.clims.check_classes(classes)
    synonyms = {classes.prompts[classes.index(k)]: v for k, v in params.clims.synonyms.items()}
    matcher = build_matcher(g.kind, arch=g.arch, pretrained=g.pretrained, prompt=g.prompt,
                            temperature=g.temperature, synonyms=synonyms, imagenet_classes=g.imagenet_classes,
                            device=device)
    matcher.check_concepts(list(classes.prompts), background=False)
    return matcher


def prepare_matcher(matcher: Matcher, device: str | torch.device = "cpu") -> Matcher:
    """A copy of `matcher` on `device`, channels-last, its BatchNorm folded into the convolutions: it is frozen
    for good, so that is exact up to float rounding (checked on a probe image batch by `for_inference`)."""
    from textwsss.models.runtime import for_inference, image_probe

    probe = image_probe(device, lambda m, x: m.encode_images(x))
    return for_inference(matcher, device, probe=probe).freeze()
