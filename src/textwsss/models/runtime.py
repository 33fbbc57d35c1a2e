"""How the networks run: device and memory layout for every use, BatchNorm folding for inference.

Every network is moved with `place`: to its device and in channels-last (NHWC) layout. oneDNN's CPU
convolutions (depthwise ones above all) and cuDNN's tensor-core kernels under AMP are fastest in it;
on this project's 2-core CPU it made a training step of the EfficientNet-Lite0 CAM network 1.8x faster
and its multi-scale inference 1.3-1.65x (only 4-D weights change layout; results agree to float rounding).

`for_inference` also folds each eval-mode BatchNorm into the convolution before it (BatchNorm was ~20% of
EfficientNet-Lite0's CPU inference time), and checks the folded network against the original on a probe.
Gradients still flow through a folded network to its inputs (the frozen matcher of CLIMS needs that).
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)

LAYOUT = torch.channels_last
FOLD_RTOL = 1e-4  # of the output's largest magnitude


def place(module: nn.Module, device: str | torch.device, *, varying_shapes: bool = False) -> nn.Module:
    """`module` (moved in place) on `device`, its convolution weights in channels-last layout; NCHW instead on
    CUDA for `varying_shapes` (inference over images of many sizes). There cuDNN pays about a second per new
    input shape to choose the kernels of a channels-last dilated depthwise network, and ~0.03 s in NCHW
    (H200: make_cam took 176 s for 148 images, benchmarks/gpu_check.sh GATE=1 shows it now)."""
    cuda_varying = varying_shapes and torch.device(device).type == "cuda"
    return module.to(device, memory_format=torch.contiguous_format if cuda_varying else LAYOUT)


def fold_batchnorm(model: nn.Module) -> int:
    """Folds, in place, every BatchNorm2d into the Conv2d registered just before it in the same parent (the
    conv -> bn order of EfficientNet blocks, torchvision ResNets and ASPP branches) when the channel counts
    match. The model must be in eval mode. Returns how many were folded; callers should check the result
    (see `for_inference`), since registration order is not call order in every network."""
    if model.training:
        raise ValueError("fold_batchnorm: the model must be in eval mode (running statistics are folded)")
    folded = 0
    for parent in list(model.modules()):
        previous: tuple[str, nn.Module] | None = None
        for name, child in list(parent.named_children()):
            if (isinstance(child, nn.BatchNorm2d) and previous is not None and isinstance(previous[1], nn.Conv2d)
                    and previous[1].out_channels == child.num_features and child.track_running_stats):
                setattr(parent, previous[0], fuse_conv_bn_eval(previous[1], child))
                setattr(parent, name, nn.Identity())
                folded += 1
            previous = (name, child)
    return folded


def image_probe(device: str | torch.device,
                forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
                ) -> Callable[[nn.Module], torch.Tensor]:
    """The probe for networks that take an image batch: forward(net, x) (default net(x)) on a seeded random
    (2, 3, 96, 128) batch in [0, 1]."""
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0)).to(device)
    return (lambda net: net(x)) if forward is None else (lambda net: forward(net, x))


@torch.no_grad()  # not inference_mode: the folded weights must stay usable where gradients reach the inputs
def for_inference(model: nn.Module, device: str | torch.device,
                  probe: Callable[[nn.Module], torch.Tensor] | None = None) -> nn.Module:
    """An eval-mode copy of `model`, placed on `device`, with BatchNorm folded into its convolutions. For
    networks that never train again: the CAM net in make_cam, DeepLab in evaluation, the frozen matcher.

    probe(net) -> output on a fixed input: when given, the folded copy must reproduce the original's output
    (relative 1e-4), otherwise the unfolded copy is returned with a warning. Without a probe nothing is folded.
    """
    plain = place(copy.deepcopy(model), device, varying_shapes=True).eval()
    if probe is None:
        return plain
    folded = copy.deepcopy(plain)
    count = fold_batchnorm(folded)
    if count == 0:
        return plain
    expected, got = probe(plain), probe(folded)
    error = float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))
    if error > FOLD_RTOL:
        log.warning("BatchNorm folding changed the %s output by %.1e (relative); running it unfolded",
                    type(model).__name__, error)
        return plain
    log.info("%s: %d BatchNorm layers folded into their convolutions (output change %.1e)", type(model).__name__,
             count, error)
    return folded
