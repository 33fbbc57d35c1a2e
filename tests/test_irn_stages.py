"""The IRN stages: train_irn and random_walk run on a tiny synthetic workspace, random_walk resumes an interrupted
run to the same bytes on voc-mini images, the params are validated, a published res50_irn.pth loads with IRN's
key names mapped, and seg.labels random_walk makes train_seg learn from the walk's labels."""
from __future__ import annotations

import functools
import json
import re

import numpy as np
import pytest
import torch

from textwsss.cam import normalise_per_class
from textwsss.data.images import read_mask
from textwsss.io import npz_bytes, write_bytes
from textwsss.irn import BoundaryNet
from textwsss.irn.checkpoint import load_irn_weights
from textwsss.models.backbones import build_backbone
from textwsss.models.checkpoints import load_model, read_checkpoint, save_model
from textwsss.models.factory import build_boundary_net, build_cam_net
from textwsss.params import ParamsError, parse_params
from textwsss.pipeline import prepare, pseudo_labels, random_walk, train_irn, train_seg
from textwsss.pipeline.pseudo_labels import cams_from_mask
from textwsss.pipeline.resumable import ResumableFolder, stamp_of
from textwsss.pipeline.workspace import Workspace
from textwsss.synthetic import write_voc_root

TINY = {
    "data": {"workers": 0},
    "cam": {"pretrained": "none"},
    "pseudo_labels": {"workers": 1, "crf": {"iterations": 2}},
    "train_irn": {"epochs": 1, "batch_size": 2, "crop_size": 48, "scale_range": [1.0, 1.0], "lr": 0.1,
                  "amp": False},
    "random_walk": {"workers": 1, "max_side": 0, "exp_times": 3},
    "seg": {"pretrained": "none", "aspp_channels": 8, "decoder_channels": 8},
}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _cam_file_bytes(mask: np.ndarray, strided: bool) -> bytes:
    """A CAM file from a mask (blurred, shifted maps); with `strided`, also stride-4 maps as make_cam writes them,
    here taken as every 4th pixel of the full maps (not the area average the fallback uses)."""
    cams, keys = cams_from_mask(mask, downscale=4, blur_sigma=3.0)
    arrays = {"cams": cams, "keys": keys}
    if strided:
        arrays["cams_s4"] = normalise_per_class(torch.from_numpy(cams[:, ::4, ::4].astype(np.float32))).numpy() \
            .astype(np.float16)
    return npz_bytes(**arrays)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A synthetic VOC root, its prepared dataset, a CAM network in train_cam's place, CAMs and CRF seeds."""
    tmp = tmp_path_factory.mktemp("irn-stages")
    write_voc_root(tmp / "voc", train=4, val=2, seed=0, size=48, num_classes=3)
    ws = Workspace(tmp / "project")
    params = _params(tmp, {})
    prepare.run(params, ws)
    data = ws.dataset(params)
    torch.manual_seed(1)
    cam_net = build_cam_net("efficientnet_lite0", pretrained="none", num_classes=3)
    with torch.no_grad():  # weights and statistics no initialisation makes: equality can only come from the copy
        for p in cam_net.parameters():
            p.add_(0.01)
        for name, b in cam_net.named_buffers():
            if name.endswith("running_mean"):
                b.add_(0.5)
    save_model(ws.model_file("train_cam"), cam_net, data.classes, stage="train_cam")
    cams = ResumableFolder(ws.cams, stamp_of({"test": "cams from masks"}), ".npz")
    cams.open()
    for n, i in enumerate(data.ids("train")):
        cams.write(i, _cam_file_bytes(data.read_mask(i), strided=n % 2 == 0))  # both kinds of CAM file
    cams.finish(data.ids("train"))
    pseudo_labels.run(params, ws)
    return tmp, ws


def _params(tmp, extra: dict):
    return parse_params(_merge(_merge(TINY, {"data": {"root": str(tmp / "voc")}}), extra))


def test_train_irn_then_random_walk_on_a_tiny_workspace(workspace):
    tmp, ws = workspace
    params = _params(tmp, {})
    data = ws.dataset(params)
    train_irn.run(params, ws)
    model, meta = load_model(ws.model_file("train_irn"))  # through the checkpoint code of every model
    assert isinstance(model, BoundaryNet) and meta["stage"] == "train_irn"
    assert (ws.model_dir("train_irn") / "checkpoint.pt").is_file()
    logged = json.loads((ws.logs("train_irn") / "metrics.json").read_text())
    assert {"total", "bg_pos", "fg_pos", "neg"} <= set(logged["train"])
    # the backbone is the CAM network's, weights and BatchNorm statistics unchanged by an epoch of training ...
    cam_state = read_checkpoint(ws.model_file("train_cam"))["state_dict"]
    cam_backbone = {k[len("backbone."):]: v for k, v in cam_state.items() if k.startswith("backbone.")}
    trained = model.backbone.state_dict()
    assert trained.keys() == cam_backbone.keys()
    assert all(torch.equal(trained[k], cam_backbone[k]) for k in trained)
    # ... while the edge layers moved from where the stage's seeded initialisation put them
    torch.manual_seed(params.seed)
    initial = train_irn.relation_network(params)
    assert not torch.equal(initial.fuse.weight, model.fuse.weight)
    assert all(not torch.equal(a[0].weight, b[0].weight) for a, b in zip(initial.reduce, model.reduce))

    random_walk.run(params, ws)
    folder = ws.model_dir("random_walk")
    for i in data.ids("train"):
        labels = read_mask(folder / f"{i}.png")
        assert labels.shape == data.read_image(i).shape[:2]
        assert set(np.unique(labels)) <= {0, *(k + 1 for k in data.labels[i])}  # every pixel, no 255
    scores = json.loads((ws.metrics / "random_walk.json").read_text())
    assert scores["ignore_ratio"] == 0 and scores["miou"] == pytest.approx(scores["miou_all_pixels"])
    assert scores["n_images"] == len(data.ids("score")) and "scored" in scores["note"]
    seeds = json.loads((ws.metrics / "pseudo_labels.json").read_text())
    assert seeds.keys() <= scores.keys()  # scored as pseudo_labels.json is, so the two compare


def _recorded_labels(params, ws, monkeypatch) -> dict:
    """The label files train_seg hands to its dataset (training stops right there)."""
    seen = {}

    class Recorded(Exception):
        pass

    def recording_dataset(data, ids, labels, **kw):
        seen.update(labels)
        raise Recorded

    monkeypatch.setattr(train_seg, "SegmentationDataset", recording_dataset)
    with pytest.raises(Recorded):
        train_seg.run(params, ws)
    return seen


def test_seg_labels_random_walk_trains_on_the_walk(workspace, monkeypatch):
    tmp, ws = workspace
    ids = ws.dataset(_params(tmp, {})).ids("train")
    walked = _recorded_labels(_params(tmp, {"seg": {"labels": "random_walk"}}), ws, monkeypatch)
    assert walked == {i: ws.root / "data" / "random_walk" / f"{i}.png" for i in ids}
    seeds = _recorded_labels(_params(tmp, {"seg": {"labels": "pseudo"}}), ws, monkeypatch)
    assert seeds == {i: ws.root / "data" / "pseudo_labels" / f"{i}.png" for i in ids}


# ------------------------------------------------------------------------------- resume, on voc-mini images

WALK = dict(beta=10, exp_times=4, radius=5, bg_threshold=0.25, flip=True, max_side=96)


@pytest.fixture(scope="module")
def walk_inputs(voc_data, tmp_path_factory):
    """A tiny relation network (random edge layers) and CAM files of four voc-mini train images."""
    tmp = tmp_path_factory.mktemp("walk")
    ids = voc_data.ids("train")[:4]
    torch.manual_seed(0)
    model = build_boundary_net("efficientnet_lite0", pretrained="none", width=8).eval()
    for i in ids:
        write_bytes(tmp / "cams" / f"{i}.npz", _cam_file_bytes(voc_data.read_mask(i), strided=False))
    return tmp, ids, model


def _folder(folder):
    """Every file of a folder (hidden ones too: stamp, manifest) by name, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _walk(model, voc_data, ids, cams, folder, workers=1, **kw) -> int:
    return random_walk.generate_walk_labels(model, voc_data, ids, cams, folder, workers=workers, **{**WALK, **kw})


def test_interrupted_walk_resumes_to_the_same_bytes(walk_inputs, voc_data, monkeypatch):
    tmp, ids, model = walk_inputs
    whole = ResumableFolder(tmp / "whole", {"v": 1}, ".png")
    whole.open()
    assert _walk(model, voc_data, ids, tmp / "cams", whole) == len(ids)
    whole.finish(ids)
    real_bytes, made = random_walk.label_png_bytes, []

    def dies_after_two(labels):
        if len(made) == 2:
            raise KeyboardInterrupt("killed")
        made.append(1)
        return real_bytes(labels)

    monkeypatch.setattr(random_walk, "label_png_bytes", dies_after_two)
    killed = ResumableFolder(tmp / "killed", {"v": 1}, ".png")
    killed.open()
    with pytest.raises(KeyboardInterrupt):
        _walk(model, voc_data, ids, tmp / "cams", killed)
    monkeypatch.setattr(random_walk, "label_png_bytes", real_bytes)
    assert len(list((tmp / "killed").glob("*.png"))) == 2
    (tmp / "killed" / f".{ids[3]}.png.abc.tmp.png").write_bytes(b"half")  # a write the kill cut short
    resumed = ResumableFolder(tmp / "killed", {"v": 1}, ".png")
    assert resumed.open() == 2
    assert _walk(model, voc_data, ids, tmp / "cams", resumed, workers=2) == len(ids) - 2  # and in a pool
    resumed.finish(ids)
    assert _folder(tmp / "killed") == _folder(tmp / "whole")


def test_walk_labels_every_pixel_with_the_image_classes(walk_inputs, voc_data):
    tmp, ids, model = walk_inputs
    out = ResumableFolder(tmp / "full", {"v": 2}, ".png")
    out.open()
    _walk(model, voc_data, ids[:1], tmp / "cams", out, max_side=0)
    for i in ids[:1]:
        labels = read_mask(tmp / "full" / f"{i}.png")
        assert labels.shape == voc_data.read_image(i).shape[:2]
        assert set(np.unique(labels)) <= {0, *(k + 1 for k in voc_data.labels[i])}


def test_walk_cams_prefer_make_cams_strided_maps(tmp_path):
    mask = np.zeros((32, 44), np.uint8)
    mask[5:20, 8:30] = 3
    write_bytes(tmp_path / "s4.npz", _cam_file_bytes(mask, strided=True))
    write_bytes(tmp_path / "full.npz", _cam_file_bytes(mask, strided=False))
    with np.load(tmp_path / "s4.npz") as f:
        given, full = f["cams_s4"].astype(np.float32), f["cams"].astype(np.float32)
    cams, keys = random_walk.walk_cams(tmp_path / "s4.npz", (8, 11))
    assert keys.tolist() == [2] and cams.shape == (1, 8, 11)
    np.testing.assert_allclose(cams, given / given.max(), rtol=1e-6)  # the stored maps, not an average
    # without them: the full maps averaged over each 4 x 4 cell, then normalised per class
    fallback, _ = random_walk.walk_cams(tmp_path / "full.npz", (8, 11))
    cells = full.reshape(1, 8, 4, 11, 4).mean((2, 4))
    np.testing.assert_allclose(fallback, cells / cells.max(), rtol=1e-5)
    assert not np.allclose(fallback, cams, atol=1e-3)  # the two ways differ, so the first test means something


# ------------------------------------------------------------------------------------------------ params

@pytest.mark.parametrize("raw, path, words", [
    ({"train_irn": {"radius": 1}}, "train_irn.radius", "greater than or equal to 2"),
    ({"train_irn": {"width": 30}}, "train_irn.width", "multiple of 4"),
    ({"train_irn": {"crop_size": 0}}, "train_irn.crop_size", "greater than 0"),
    ({"train_irn": {"radiu": 10}}, "train_irn.radiu", "unknown key"),
    ({"random_walk": {"beta": 0}}, "random_walk.beta", "greater than 0"),
    ({"random_walk": {"exp_times": 13}}, "random_walk.exp_times", "less than or equal to 12"),
    ({"random_walk": {"bg_threshold": 1.5}}, "random_walk.bg_threshold", "less than or equal to 1"),
    ({"random_walk": {"radius": 1}}, "random_walk.radius", "greater than or equal to 2"),
    ({"seg": {"labels": "walk"}}, "seg.labels", "'pseudo', 'random_walk' or 'gt'"),
])
def test_bad_irn_params_name_the_key(raw, path, words):
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert path in str(err.value) and words in str(err.value)


def test_irn_defaults_are_irns_recipe():
    p = parse_params({})
    t, w = p.train_irn, p.random_walk
    assert (t.crop_size, t.batch_size, t.epochs, t.lr, t.weight_decay, t.radius) == (512, 32, 3, 0.1, 1e-4, 10)
    assert (w.beta, w.exp_times, w.radius, w.bg_threshold) == (10, 8, 5, 0.25)


# ------------------------------------------------------------------------------- res50_irn.pth, IRN's names

@functools.lru_cache(maxsize=2)
def _official(seed: int) -> dict:
    return _official_state_uncached(seed)


def _official_state(seed: int = 0) -> dict:
    return dict(_official(seed))  # a copy the test may edit


def _official_state_uncached(seed: int) -> dict:
    """A state dict with the names and shapes of IRN's res50_irn.pth (net/resnet50_irn.py AffinityDisplacement,
    as step/train_irn.py saves it), random values: every module under each name it is registered by."""
    import torchvision

    g = torch.Generator().manual_seed(seed)
    resnet = torchvision.models.resnet50(weights=None).state_dict()
    state = {}
    for k, v in resnet.items():
        if k.startswith("fc."):
            continue  # IRN's resnet50 has no classifier
        if v.dtype == torch.int64:
            value = torch.randint(0, 1000, v.shape, generator=g)
        elif k.endswith("running_var"):
            value = torch.rand(v.shape, generator=g) + 0.5
        else:  # small: random weights of this size keep a 50-layer forward pass finite
            value = 0.05 * torch.randn(v.shape, generator=g)
        state["resnet50." + k] = value
        # the same modules as stage1 (conv1, bn1, relu, maxpool), stage2..5 (layer1..4) and backbone.0..4
        m = re.match(r"^(conv1|bn1)\.(.+)$", k)
        if m:
            index = {"conv1": 0, "bn1": 1}[m.group(1)]
            state[f"stage1.{index}.{m.group(2)}"] = value
            state[f"backbone.0.{index}.{m.group(2)}"] = value
        m = re.match(r"^layer([1-4])\.(.+)$", k)
        if m:
            state[f"stage{int(m.group(1)) + 1}.0.{m.group(2)}"] = value
            state[f"backbone.{m.group(1)}.0.{m.group(2)}"] = value
    for level, channels in enumerate((64, 256, 512, 1024, 2048), start=1):  # 1x1 conv, GroupNorm(4, 32)
        for suffix, shape in (("0.weight", (32, channels, 1, 1)), ("1.weight", (32,)), ("1.bias", (32,))):
            value = torch.randn(shape, generator=g)
            state[f"fc_edge{level}.{suffix}"] = state[f"edge_layers.{level - 1}.{suffix}"] = value
    state["fc_edge6.weight"] = state["edge_layers.5.weight"] = torch.randn((1, 160, 1, 1), generator=g)
    state["fc_edge6.bias"] = state["edge_layers.5.bias"] = torch.randn((1,), generator=g)
    # a part of the displacement branch and the pair index parameters: in the file, of no use to BoundaryNet
    state["fc_dp1.0.weight"] = state["dp_layers.0.0.weight"] = torch.randn((64, 64, 1, 1), generator=g)
    state["fc_dp7.3.weight"] = state["dp_layers.6.3.weight"] = torch.randn((2, 256, 1, 1), generator=g)
    state["fc_dp7.4.running_mean"] = state["dp_layers.6.4.running_mean"] = torch.zeros(2)
    state["path_indices0"] = torch.zeros((1, 4, 3), dtype=torch.int64)
    state["ind_from"] = torch.zeros((1, 10), dtype=torch.int64)
    state["ind_to"] = torch.zeros((3, 10), dtype=torch.int64)
    return state


def _resnet_net() -> BoundaryNet:
    return build_boundary_net("resnet50", pretrained="none", output_stride=16, dilate=False)


def test_res50_irn_loads_strictly_with_irns_names(tmp_path):
    state = _official_state()
    torch.save(state, tmp_path / "res50_irn.pth")
    net = _resnet_net()
    assert load_irn_weights(net, tmp_path / "res50_irn.pth") == "irn"
    ours = net.state_dict()
    # the mapping, spelled out name by name
    for theirs, mine in [("resnet50.conv1.weight", "backbone.conv1.weight"),
                         ("resnet50.bn1.running_var", "backbone.bn1.running_var"),
                         ("resnet50.layer3.0.downsample.1.weight", "backbone.layer3.0.downsample.1.weight"),
                         ("resnet50.layer4.2.conv2.weight", "backbone.layer4.2.conv2.weight"),
                         ("fc_edge1.0.weight", "reduce.0.0.weight"), ("fc_edge3.1.bias", "reduce.2.1.bias"),
                         ("fc_edge5.1.weight", "reduce.4.1.weight"), ("fc_edge6.weight", "fuse.weight"),
                         ("fc_edge6.bias", "fuse.bias")]:
        assert torch.equal(ours[mine], state[theirs]), mine
    assert all(torch.equal(ours["backbone." + k[len("resnet50."):]], v) for k, v in state.items()
               if k.startswith("resnet50."))
    # a forward pass on the loaded weights: the fused map at stride 4
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        logits = net.eval()(x)
    assert logits.shape == (1, 1, 16, 16) and torch.isfinite(logits).all()


def test_res50_irn_problems_are_named(tmp_path):
    state = _official_state()
    del state["fc_edge4.1.weight"]
    state["fc_extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as err:
        load_irn_weights(_resnet_net(), tmp_path / "bad.pth")
    message = str(err.value)
    assert "bad.pth" in message and "'fc_extra.weight'" in message
    assert "missing 'reduce.3.1.weight' (IRN key 'fc_edge4.1.weight')" in message
    # another backbone: the ResNet names have no counterpart
    torch.save(_official_state(), tmp_path / "res50_irn.pth")
    with pytest.raises(ValueError, match="no counterpart"):
        load_irn_weights(BoundaryNet(build_backbone("efficientnet_lite0", "none", 16)), tmp_path / "res50_irn.pth")
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth.*train_irn\.init_checkpoint"):
        load_irn_weights(_resnet_net(), tmp_path / "nowhere.pth")


def test_train_irn_init_checkpoint_takes_the_file_and_trains_nothing(workspace, tmp_path):
    tmp, ws = workspace
    torch.save(_official_state(seed=3), tmp_path / "res50_irn.pth")
    project = Workspace(tmp_path / "project")
    prepare.run(_params(tmp, {}), project)
    params = _params(tmp, {"cam": {"backbone": "resnet50", "dilate": False},
                           "train_irn": {"init_checkpoint": str(tmp_path / "res50_irn.pth")}})
    train_irn.run(params, project)  # no CAM network, no seeds: nothing is trained
    model, meta = load_model(project.model_file("train_irn"))
    assert meta["format"] == "irn" and not (project.model_dir("train_irn") / "checkpoint.pt").exists()
    assert torch.equal(model.fuse.weight, _official_state(seed=3)["fc_edge6.weight"])
    missing = _params(tmp, {"cam": {"backbone": "resnet50", "dilate": False},
                            "train_irn": {"init_checkpoint": str(tmp_path / "absent.pth")}})
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        train_irn.run(missing, project)
