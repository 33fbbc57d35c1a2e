"""IRN's boundary branch (net/resnet50_irn.py, edge layers) on a frozen backbone's multi-level features.

Each level is reduced by a 1x1 conv (no bias) + GroupNorm(4) to 32 channels, brought to stride 4 (bilinear
upsampling by its stride / 4 and a top-left crop, as IRN; a stride-2 level is average-pooled), passed through a
ReLU; the levels are concatenated and fused by a 1x1 conv with bias into one logit map. The boundary map is
its sigmoid, in [0, 1]. The backbone is frozen (weights and BatchNorm statistics, no gradient), as IRN freezes
its ResNet-50, so only the edge layers train.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.backbones import Backbone, EfficientNetLiteBackbone, Normalize, ResNetBackbone


def level_channels(backbone: Backbone) -> list[int]:
    """The widths of level_features' outputs."""
    if isinstance(backbone, ResNetBackbone):
        return [backbone.conv1.out_channels, *(layer[-1].conv3.out_channels for layer in
                                               (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4))]
    if isinstance(backbone, EfficientNetLiteBackbone):
        return [group[-1]._bn2.num_features for group in backbone.stages()[1:]]
    raise TypeError(f"backbone: no multi-level features for {type(backbone).__name__}")


def level_features(backbone: Backbone, x: Tensor) -> list[Tensor]:
    """The output of every resolution level of `backbone` for normalised images x.

    ResNet: as IRN's five stages (conv1 + maxpool at stride 4, layer1..layer4). EfficientNet-Lite: the last block
    of each resolution group of MBConv blocks (strides 2, 4, 8, 16, 32 or 16).
    """
    if isinstance(backbone, ResNetBackbone):
        x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
        out = [x]
        for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4):
            x = layer(x)
            out.append(x)
        return out
    if isinstance(backbone, EfficientNetLiteBackbone):
        x = backbone.act(backbone.bn_stem(backbone.conv_stem(x)))
        n, i, out = len(backbone.blocks), 0, []
        for group in backbone.stages()[1:]:
            for block in group:
                x = block(x, drop_connect_rate=backbone.drop_connect_rate * i / n)
                i += 1
            out.append(x)
        return out
    raise TypeError(f"backbone: no multi-level features for {type(backbone).__name__}")


def _to_stride4(x: Tensor, stride: int, size: tuple[int, int]) -> Tensor:
    if stride > 4:
        x = F.interpolate(x, scale_factor=stride // 4, mode="bilinear", align_corners=False)
    elif stride < 4:
        x = F.avg_pool2d(x, 4 // stride, ceil_mode=True)
    if x.shape[-2] < size[0] or x.shape[-1] < size[1]:  # odd sizes: stretch instead of cropping
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x[..., :size[0], :size[1]]


class BoundaryNet(nn.Module):
    """Images (B,3,H,W) RGB in [0,1] -> boundary logits (B,1,h,w) at stride 4; ImageNet normalisation inside."""

    def __init__(self, backbone: Backbone, width: int = 32):
        super().__init__()
        if width < 4 or width % 4:
            raise ValueError(f"width: expected a positive multiple of 4 (GroupNorm with 4 groups), got {width}")
        self.normalize = Normalize()
        self.backbone = backbone
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.reduce = nn.ModuleList(nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.GroupNorm(4, width))
                                    for c in level_channels(backbone))
        self.fuse = nn.Conv2d(width * len(self.reduce), 1, 1, bias=True)
        self.spec = {"type": "boundary_net", "backbone": backbone.name, "pretrained": "none",
                     "output_stride": backbone.output_stride, "dilate": backbone.dilate, "width": width}
        self.train()

    def train(self, mode: bool = True) -> "BoundaryNet":
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm keeps its statistics
        return self

    def forward(self, images: Tensor) -> Tensor:
        x = self.normalize(images)
        with torch.no_grad():
            levels = level_features(self.backbone, x)
        size = (math.ceil(x.shape[-2] / 4), math.ceil(x.shape[-1] / 4))
        maps = []
        for reduce, f in zip(self.reduce, levels):
            stride = 2 ** round(math.log2(x.shape[-2] / f.shape[-2]))
            maps.append(F.relu(_to_stride4(reduce(f), stride, size)))
        return self.fuse(torch.cat(maps, 1))

    @torch.no_grad()
    def boundary(self, images: Tensor, flip: bool = True) -> Tensor:
        """(B, h, w) boundary maps in [0, 1]; with flip, the sigmoid of the mean of the logits of the images and
        of their mirror images (mirrored back), as IRN's inference."""
        logits = self(torch.cat([images, images.flip(-1)]) if flip else images)[:, 0]
        if flip:
            n = images.shape[0]
            logits = (logits[:n] + logits[n:].flip(-1)) / 2
        return torch.sigmoid(logits)

    def param_groups(self, lr: float | None = None) -> list[dict]:
        """The edge layers, the only trained part (IRN trains them at the base rate)."""
        group = {"params": [*self.reduce.parameters(), *self.fuse.parameters()], "lr_mult": 1.0}
        if lr is not None:
            group["lr"] = lr
        return [group]
