"""A frozen open_clip model as a text-image matcher (the real CLIMS evaluator).

Images are normalised with the model's own CLIP mean/std (never ImageNet's); concepts are put
into a prompt template ("a photo of {}." by default, as the official CLIMS clip_utils.py). similarity() is the plain cosine
similarity of L2-normalised features, clamped to [1e-4, 0.9999] as in CLIMS; logits() is
100 x cosine, CLIP's usual softmax scale.

Weights are never downloaded at run time: a pretrained tag must already be in the local cache
(HF hub cache or ~/.cache/clip), or `pretrained` names a local checkpoint file. Otherwise the
constructor raises a RuntimeError naming the file to provide.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor

from textwsss.guide.base import SIM_MAX, SIM_MIN, Matcher

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "a photo of {}."
_HF_DEFAULT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _hf_cache_dir() -> Path:
    try:
        from huggingface_hub import constants
        return Path(constants.HF_HUB_CACHE)
    except ImportError:  # huggingface_hub is optional for open_clip
        return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def _cached_hf_file(model_id: str, filenames: Sequence[str]) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for name in filenames:
        found = try_to_load_from_cache(repo_id=model_id, filename=name)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def resolve_checkpoint(arch: str, pretrained: str | None) -> tuple[str | None, dict]:
    """Local checkpoint file for (arch, pretrained) and the tag's config, without any download.

    Returns (None, {}) for random init (None / 'none' / ''). Raises RuntimeError naming the
    architecture, the tag and the exact file(s) to provide when the weights are not on disk.
    """
    if pretrained is None or str(pretrained).strip().lower() in ("", "none"):
        return None, {}
    pretrained = str(pretrained)
    if os.path.isfile(pretrained):
        return pretrained, {}
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        raise RuntimeError(
            f"open_clip weights for architecture '{arch}': '{pretrained}' is neither a known pretrained tag "
            f"(known: {open_clip.list_pretrained_tags_by_model(arch)}) nor an existing checkpoint file. "
            f"Set guide.pretrained to a local checkpoint path.")
    expected: list[str] = []
    if cfg.get("file"):
        if os.path.isfile(cfg["file"]):
            return cfg["file"], cfg
        expected.append(cfg["file"])
    if cfg.get("hf_hub"):
        hub = cfg["hf_hub"]
        if hub.endswith("/"):  # open_clip's convention: repo id only, default weight file names
            model_id, names = hub.rstrip("/"), _HF_DEFAULT_FILES
        else:
            model_id, filename = os.path.split(hub)
            names = (filename,)
        found = _cached_hf_file(model_id, names)
        if found:
            return found, cfg
        repo_dir = _hf_cache_dir() / f"models--{model_id.replace('/', '--')}" / "snapshots" / "<revision>"
        expected += [str(repo_dir / n) for n in names]
    if cfg.get("url"):
        path = Path.home() / ".cache" / "clip" / os.path.basename(cfg["url"])
        if path.is_file():
            return str(path), cfg
        expected.append(str(path))
    raise RuntimeError(
        f"open_clip weights for architecture '{arch}' with pretrained tag '{pretrained}' are not available "
        f"offline (no download is attempted). Provide one of these files: {expected}; or download the "
        f"checkpoint elsewhere and set guide.pretrained to its local file path.")


class OpenClipMatcher(Matcher):
    """Frozen open_clip CLIP model. `arch` is any open_clip architecture name; `pretrained` a tag,
    a local checkpoint path, or None/'none' for random weights (tests); `prompt` a template with
    one '{}' for the concept name."""

    def __init__(self, arch: str = "ViT-B-32", pretrained: str | None = "openai",
                 prompt: str = DEFAULT_PROMPT) -> None:
        super().__init__()
        if "{}" not in prompt:
            raise ValueError(f"guide.prompt: expected a template containing '{{}}', got {prompt!r}")
        if arch not in open_clip.list_models():
            raise ValueError(f"guide.arch: unknown open_clip architecture '{arch}'")
        checkpoint, tag_cfg = resolve_checkpoint(arch, pretrained)
        kwargs: dict = {}
        if tag_cfg.get("quick_gelu"):
            kwargs["force_quick_gelu"] = True  # the tag's weights were trained with QuickGELU
        if tag_cfg.get("mean") and tag_cfg.get("std"):
            kwargs["force_preprocess_cfg"] = {"mean": tag_cfg["mean"], "std": tag_cfg["std"]}
        self.arch, self.pretrained, self.prompt = arch, pretrained, prompt
        self.model = open_clip.create_model(arch, pretrained=checkpoint, **kwargs)
        self.tokenizer = open_clip.get_tokenizer(arch)
        pp = self.model.visual.preprocess_cfg
        size = self.model.visual.image_size
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.register_buffer("mean", torch.tensor(pp["mean"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pp["std"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.freeze()
        log.info("open_clip matcher %s (%s), input %d px", arch, pretrained, self.input_size)

    def _encode_normalised(self, images: Tensor) -> Tensor:
        return self.model.encode_image(images)

    def _encode_concept_batch(self, concepts: list[str]) -> Tensor:
        """Text features of the prompted concepts. A class with synonyms (set_synonyms) gets the
        prompt ensemble: the mean of the L2-normalised features of its names' prompts, re-normalised."""
        names = [self.concept_names(c) for c in concepts]
        flat = [n for group in names for n in group]
        tokens = self.tokenizer([self.prompt.format(n) for n in flat]).to(self.device)
        feats = self.model.encode_text(tokens)
        out, start = [], 0
        for group in names:
            block = feats[start:start + len(group)]
            start += len(group)
            # a lone name keeps its raw feature (similarity/logits normalise anyway)
            out.append(block[0] if len(group) == 1 else F.normalize(F.normalize(block, dim=-1).mean(0), dim=-1))
        return torch.stack(out)

    def similarity(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        cos = F.normalize(image_feats, dim=-1) @ F.normalize(concept_feats, dim=-1).T
        return cos.clamp(SIM_MIN, SIM_MAX)

    def logits(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        return 100.0 * F.normalize(image_feats, dim=-1) @ F.normalize(concept_feats, dim=-1).T

    def gradcam_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """ViT: the patch tokens entering the last block, as a (N,C,h,w) map (the output of the last
        block only feeds the class token to the pooled feature, so its patch tokens get no gradient);
        ModifiedResNet: the output of layer4. The returned map lies on the path to the features."""
        visual = self.model.visual
        x = self.normalise(self.resize(images))
        captured: dict[str, Tensor] = {}
        if hasattr(visual, "transformer"):
            gh, gw = visual.grid_size
            batch_first = getattr(visual.transformer, "batch_first", True)

            def pre_hook(module, args):
                tokens = args[0] if batch_first else args[0].transpose(0, 1)
                n_prefix = tokens.shape[1] - gh * gw
                prefix, patches = tokens[:, :n_prefix], tokens[:, n_prefix:]
                fmap = patches.transpose(1, 2).reshape(tokens.shape[0], -1, gh, gw)
                captured["fmap"] = fmap
                rebuilt = torch.cat([prefix, fmap.flatten(2).transpose(1, 2)], dim=1)
                rebuilt = rebuilt if batch_first else rebuilt.transpose(0, 1)
                return (rebuilt, *args[1:])

            handle = visual.transformer.resblocks[-1].register_forward_pre_hook(pre_hook)
        elif hasattr(visual, "layer4"):
            def hook(module, args, output):
                captured["fmap"] = output

            handle = visual.layer4.register_forward_hook(hook)
        else:
            raise NotImplementedError(f"GradCAM: unsupported open_clip vision tower {type(visual).__name__}")
        try:
            feats = self.model.encode_image(x)
        finally:
            handle.remove()
        return captured["fmap"], feats
