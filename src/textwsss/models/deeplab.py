"""DeepLab v3+ (Chen et al., ECCV 2018): ASPP on the backbone's 'out' features, a decoder that fuses them
with 48-channel projected 'low' (stride 4) features, and logits upsampled to the input resolution."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from .backbones import Backbone, Normalize


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DeepLabV3Plus(nn.Module):
    """Images (B,3,H,W) RGB in [0,1] -> logits (B,num_classes,H,W); ImageNet normalisation inside.

    ASPP rates (6, 12, 18) at output stride 16, doubled at 8 (halved at 32), so the receptive fields stay
    the same in image pixels. Note: ASPP's image-pooling branch has a BatchNorm on a 1x1 map, so training
    needs batches of at least 2 images.
    """

    def __init__(self, backbone: Backbone, num_classes: int = 21, aspp_channels: int = 256,
                 low_channels: int = 48, decoder_channels: int = 256):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer, got {num_classes}")
        scale = 16 / backbone.output_stride
        rates = [int(round(r * scale)) for r in (6, 12, 18)]
        self.normalize = Normalize()
        self.backbone = backbone
        self.aspp = ASPP(backbone.channels["out"], rates, aspp_channels)
        self.low_proj = _conv_bn_relu(backbone.channels["low"], low_channels, 1)
        self.decoder = nn.Sequential(_conv_bn_relu(aspp_channels + low_channels, decoder_channels, 3),
                                     _conv_bn_relu(decoder_channels, decoder_channels, 3))
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
        self.num_classes = num_classes
        self.spec = {"type": "deeplab", "backbone": backbone.name, "pretrained": "none",
                     "output_stride": backbone.output_stride, "freeze_stem": backbone.freeze_stem,
                     "dilate": backbone.dilate, "num_classes": num_classes, "aspp_channels": aspp_channels,
                     "decoder_channels": decoder_channels}

    def forward(self, images: Tensor) -> Tensor:
        feats = self.backbone(self.normalize(images))
        low = self.low_proj(feats["low"])
        x = F.interpolate(self.aspp(feats["out"]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = self.classifier(self.decoder(torch.cat([x, low], 1)))
        return F.interpolate(x, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def head_modules(self) -> list[nn.Module]:
        return [self.aspp, self.low_proj, self.decoder, self.classifier]

    def param_groups(self, backbone_lr_mult: float = 0.1, lr: float | None = None) -> list[dict]:
        """Backbone (lr_mult backbone_lr_mult) and the new layers (lr_mult 1); frozen parameters left out.
        With `lr`, each group also carries its absolute 'lr' = lr * lr_mult."""
        head = [p for m in self.head_modules() for p in m.parameters()]
        groups = [{"params": [p for p in self.backbone.parameters() if p.requires_grad],
                   "lr_mult": float(backbone_lr_mult)},
                  {"params": head, "lr_mult": 1.0}]
        if lr is not None:
            for g in groups:
                g["lr"] = lr * g["lr_mult"]
        return groups
