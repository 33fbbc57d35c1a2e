"""Tiny open_clip architectures for tests and smoke runs.

They exercise the real open_clip code paths (tokenizer, text tower, ViT or ModifiedResNet vision
tower) with random weights small enough for a 2-core CPU. Registered under the names below in
open_clip's config registry; `register_tiny_configs()` is idempotent.
"""
from __future__ import annotations

from open_clip import factory

TINY_VIT = "tiny-vit"
TINY_RN = "tiny-rn"

_CONFIGS = {
    TINY_VIT: {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
    TINY_RN: {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
}


def register_tiny_configs() -> None:
    for name, cfg in _CONFIGS.items():
        factory._MODEL_CONFIGS.setdefault(name, cfg)
