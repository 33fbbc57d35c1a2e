"""One place that builds every model: from plain keyword arguments (the stage scripts) or from a model's
`spec` (checkpoints: `build_model(model.spec)` + load_state_dict gives the same network)."""
from __future__ import annotations

from torch import nn

from .backbones import build_backbone
from .cam_net import CAMNet
from .deeplab import DeepLabV3Plus

MODEL_TYPES = ("cam_net", "deeplab", "cris", "boundary_net")


def build_cam_net(backbone: str = "efficientnet_lite0", pretrained: str = "imagenet", output_stride: int = 16,
                  num_classes: int = 20, freeze_stem: bool = True, dilate: bool = True) -> CAMNet:
    """CLIMS CAM network. freeze_stem (default on, as CLIMS): first conv + BN frozen; dilate: see build_backbone."""
    return CAMNet(build_backbone(backbone, pretrained, output_stride, freeze_stem, dilate), num_classes)


def build_deeplab(backbone: str = "efficientnet_lite0", pretrained: str = "imagenet", output_stride: int = 16,
                  num_classes: int = 21, freeze_stem: bool = False, aspp_channels: int = 256,
                  decoder_channels: int = 256, dilate: bool = True) -> DeepLabV3Plus:
    """DeepLab v3+ with 21 outputs (background + 20 VOC classes) by default. The decoder at stride 4 dominates
    the cost on a CPU; narrower aspp/decoder channels make a CPU-sized model (the paper width is 256)."""
    return DeepLabV3Plus(build_backbone(backbone, pretrained, output_stride, freeze_stem, dilate), num_classes,
                         aspp_channels=aspp_channels, decoder_channels=decoder_channels)


def build_boundary_net(backbone: str = "efficientnet_lite0", pretrained: str = "imagenet", output_stride: int = 16,
                       dilate: bool = True, width: int = 32):
    """IRN's relation network (its boundary branch) on a frozen backbone; train_irn builds it with the CAM
    network's backbone settings and takes that network's weights."""
    from ..irn.boundary_net import BoundaryNet  # lazy: the irn package brings scipy, which the others do not need

    return BoundaryNet(build_backbone(backbone, pretrained, output_stride, False, dilate), width=width)


def build_cris(arch: str = "RN50", pretrained: str | None = "openai", prompt: str = "a photo of a {}.",
               decoder_layers: int = 3, heads: int = 8, ffn_dim: int = 2048, bg_threshold: float = 0.35,
               dim: int = 512, kernel_size: int = 3, dropout: float = 0.1, quick_gelu: bool | None = None):
    """CRIS on open_clip `arch` (ModifiedResNet towers: RN50, RN101, ...; 'tiny-rn' for tests).

    pretrained: cached open_clip tag, local checkpoint path, or 'none'. dim: neck/decoder width (CRIS: 512);
    the pixel embedding has dim/2 channels and the dynamic kernel is kernel_size^2. quick_gelu: force
    QuickGELU (None: as the pretrained tag says; rebuilding from a spec passes the stored value).
    """
    from .cris import CRIS, create_clip  # open_clip is only imported by those who need it

    if arch.startswith("tiny-"):
        from textwsss.guide.tiny import register_tiny_configs

        register_tiny_configs()
    clip, tokenizer, quick_gelu = create_clip(arch, pretrained, quick_gelu)
    return CRIS(clip, tokenizer, arch=arch, quick_gelu=bool(quick_gelu), prompt=prompt,
                decoder_layers=decoder_layers, heads=heads, ffn_dim=ffn_dim, dim=dim, kernel_size=kernel_size,
                dropout=dropout, bg_threshold=bg_threshold)


def build_model(spec: dict) -> nn.Module:
    """Rebuild a model (random weights, pretrained forced to 'none') from its `spec`; load the state dict next."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"spec: expected a dict with a 'type' key, got {spec!r}")
    kind = spec["type"]
    args = {k: v for k, v in spec.items() if k != "type"}
    args["pretrained"] = "none"
    if kind == "cam_net":
        return build_cam_net(**args)
    if kind == "deeplab":
        return build_deeplab(**args)
    if kind == "cris":
        return build_cris(**args)
    if kind == "boundary_net":
        return build_boundary_net(**args)
    raise ValueError(f"spec: unknown model type {kind!r} (expected one of {MODEL_TYPES})")
