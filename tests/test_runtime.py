"""How networks run: channels-last placement and BatchNorm folding for inference."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from textwsss.models.factory import build_cam_net
from textwsss.models.runtime import fold_batchnorm, for_inference, place


def _trained_bn(model: nn.Module) -> nn.Module:
    """Gives every BatchNorm non-trivial statistics and affine parameters, so folding has work to do."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def test_place_puts_conv_weights_in_channels_last():
    net = place(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(4, 4)), "cpu")
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not net[0].weight.is_contiguous()
    assert net[1].weight.is_contiguous()  # 2-D weights are untouched


def test_fold_batchnorm_keeps_the_cam_network_output():
    torch.manual_seed(0)
    net = _trained_bn(build_cam_net(backbone="efficientnet_lite0", pretrained="none", output_stride=16,
                                    num_classes=5))
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    x = torch.rand(2, 3, 64, 80)
    with torch.inference_mode():
        expected = net(x)
        assert fold_batchnorm(net) == n_bn  # every conv -> bn pair of EfficientNet-Lite0
        assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_refuses_training_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)).train())


class NormFirst(nn.Module):
    """Registers conv before bn but applies bn first: registration order is not call order."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.conv(self.bn(x))


def test_for_inference_checks_the_folded_network_and_falls_back(caplog):
    net = _trained_bn(NormFirst())
    x = torch.rand(1, 4, 8, 8)
    with torch.inference_mode():
        expected = net(x)
    with caplog.at_level(logging.WARNING):
        ready = for_inference(net, "cpu", probe=lambda m: m(x))
    assert "running it unfolded" in caplog.text
    assert any(isinstance(m, nn.BatchNorm2d) for m in ready.modules())
    with torch.inference_mode():
        torch.testing.assert_close(ready(x), expected)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the caller's model is left alone

    good = _trained_bn(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()))
    with torch.inference_mode():
        expected = good(x)
    ready = for_inference(good, "cpu", probe=lambda m: m(x))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ready.modules())
    assert not ready.training
    with torch.inference_mode():
        torch.testing.assert_close(ready(x), expected, rtol=1e-5, atol=1e-5)


def test_matcher_is_folded_frozen_and_passes_gradients_to_images():
    from textwsss.guide import build_matcher
    from textwsss.guide.imagenet_matcher import ImageNetMatcher

    plain = ImageNetMatcher()  # BatchNorm kept, NCHW
    matcher = build_matcher("imagenet")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in matcher.modules())
    assert all(not p.requires_grad for p in matcher.parameters())
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    grads = []
    for m in (plain, matcher):
        x = images.clone().requires_grad_(True)
        feats = m.encode_images(x)
        feats[:, 281].sum().backward()  # log-probability of 'tabby cat'
        grads.append(x.grad)
    assert grads[1].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5)
