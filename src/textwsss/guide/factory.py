"""One entry point that builds the matcher named by params `guide.kind`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from textwsss.guide.base import Matcher

KINDS = ("open_clip", "imagenet")


def build_matcher(kind: str, *, arch: str = "ViT-B-32", pretrained: str | None = "openai",
                  prompt: str = "a photo of a {}.", temperature: float = 1.0,
                  synonyms: Mapping[str, Sequence[str]] | None = None,
                  device: str | torch.device = "cpu") -> Matcher:
    """A frozen matcher on `device`.

    kind: 'open_clip' (real CLIP; uses arch, pretrained = tag / local checkpoint path / 'none', prompt)
          or 'imagenet' (offline EfficientNet-Lite0 stand-in; uses temperature of its calibrated sigmoid).
    synonyms: params clims.synonyms, extra names per VOC class (see Matcher.set_synonyms); default none.
    """
    if kind == "open_clip":
        from textwsss.guide.open_clip_matcher import OpenClipMatcher
        matcher: Matcher = OpenClipMatcher(arch=arch, pretrained=pretrained, prompt=prompt)
    elif kind == "imagenet":
        from textwsss.guide.imagenet_matcher import ImageNetMatcher
        matcher = ImageNetMatcher(temperature=temperature)
    else:
        raise ValueError(f"guide.kind: expected one of {KINDS}, got {kind!r}")
    if synonyms:
        matcher.set_synonyms(synonyms)
    return prepare_matcher(matcher, device)


def prepare_matcher(matcher: Matcher, device: str | torch.device = "cpu") -> Matcher:
    """A copy of `matcher` on `device`, channels-last, its BatchNorm folded into the convolutions: it is frozen
    for good, so that is exact up to float rounding (checked on a probe image batch by `for_inference`)."""
    from textwsss.models.runtime import for_inference, image_probe

    probe = image_probe(device, lambda m, x: m.encode_images(x))
    return for_inference(matcher, device, probe=probe).freeze()
