"""CAM network (CLIMS, METHODS.md section 1): backbone + bias-free 1x1 conv to K class maps, no pooling.

forward returns the pre-sigmoid maps W_k^T Z (B,K,h,w): training applies the sigmoid (P = sigmoid(maps)),
CAM inference takes ReLU(maps).
"""
from __future__ import annotations

from torch import Tensor, nn

from .backbones import Backbone, Normalize


class CAMNet(nn.Module):
    """Images (B,3,H,W) RGB in [0,1] -> class maps (B,K,H/os,W/os); ImageNet normalisation inside."""

    def __init__(self, backbone: Backbone, num_classes: int = 20):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer, got {num_classes}")
        self.normalize = Normalize()
        self.backbone = backbone
        self.classifier = nn.Conv2d(backbone.channels["out"], num_classes, 1, bias=False)
        # Small init: initial maps near 0, so sigmoid(maps) starts near 0.5 without saturating.
        nn.init.normal_(self.classifier.weight, std=0.01)
        self.num_classes = num_classes
        self.spec = {"type": "cam_net", "backbone": backbone.name, "pretrained": "none",
                     "output_stride": backbone.output_stride, "freeze_stem": backbone.freeze_stem,
                     "dilate": backbone.dilate, "num_classes": num_classes}

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.backbone(self.normalize(images))["out"])

    def param_groups(self, head_lr_mult: float = 10.0, lr: float | None = None) -> list[dict]:
        """Backbone (lr_mult 1) and head (lr_mult head_lr_mult, CLIMS: 10x); frozen parameters left out.
        With `lr`, each group also carries its absolute 'lr' = lr * lr_mult."""
        groups = [{"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr_mult": 1.0},
                  {"params": list(self.classifier.parameters()), "lr_mult": float(head_lr_mult)}]
        if lr is not None:
            for g in groups:
                g["lr"] = lr * g["lr_mult"]
        return groups
