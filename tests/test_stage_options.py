"""Documented stage options that change what a stage does, checked in the stage itself (synthetic scenes, tiny
models): seg.init cam, seg.labels gt, train_seg.freeze_stages / freeze_batchnorm, pseudo_labels.gt_prob and
clims.class_prompts."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from textwsss.data.classes import ClassList
from textwsss.models.checkpoints import load_model, read_checkpoint, save_model
from textwsss.models.factory import build_cam_net, build_deeplab
from textwsss.params import parse_params
from textwsss.pipeline import prepare, pseudo_labels, train_seg
from textwsss.pipeline.make_cam import cam_bytes
from textwsss.pipeline.pseudo_labels import cams_from_mask
from textwsss.pipeline.resumable import ResumableFolder, stamp_of
from textwsss.pipeline.workspace import Workspace
from textwsss.synthetic import write_voc_root

TINY = {
    "data": {"workers": 0},
    "cam": {"pretrained": "none"},
    "seg": {"pretrained": "none", "aspp_channels": 8, "decoder_channels": 8},
    "train_seg": {"epochs": 1, "batch_size": 4, "crop_size": 48, "scale_range": [1.0, 1.0], "amp": False},
    "pseudo_labels": {"workers": 1, "crf": {"iterations": 3}},
}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stage-options")
    write_voc_root(tmp / "voc", train=4, val=2, seed=0, size=48, num_classes=3)
    params = parse_params(_merge(TINY, {"data": {"root": str(tmp / "voc")}}))
    ws = Workspace(tmp / "project")
    prepare.run(params, ws)
    return tmp, ws


def _params(tmp, extra: dict):
    return parse_params(_merge(_merge(TINY, {"data": {"root": str(tmp / "voc")}}), extra))


def test_seg_init_cam_and_frozen_stages_and_batchnorm_in_train_seg(project, monkeypatch):
    """seg.init cam: DeepLab's backbone starts from train_cam's network; freeze_stages 2 and freeze_batchnorm keep
    the first two stages and every BatchNorm (weights and running statistics) exactly as they started through a
    real epoch of training, while the rest trains. seg.labels gt: the masks are the training labels."""
    tmp, ws = project
    torch.manual_seed(1)
    cam_net = build_cam_net("efficientnet_lite0", pretrained="none", num_classes=3)
    with torch.no_grad():  # weights no DeepLab initialisation produces, so equality can only come from the copy
        for p in cam_net.parameters():
            p.add_(0.01)
        for name, b in cam_net.named_buffers():
            if name.endswith("running_mean"):
                b.add_(0.5)
    classes = ws.dataset(_params(tmp, {})).classes
    cam_file = ws.model_dir("train_cam") / "model.pt"
    save_model(cam_file, cam_net, classes, stage="train_cam")
    cam_backbone = {k[len("backbone."):]: v for k, v in read_checkpoint(cam_file)["state_dict"].items()
                    if k.startswith("backbone.")}

    seen = {}
    real_dataset = train_seg.SegmentationDataset

    def recording_dataset(data, ids, labels, **kw):
        seen.update(labels)
        return real_dataset(data, ids, labels, **kw)

    monkeypatch.setattr(train_seg, "SegmentationDataset", recording_dataset)
    params = _params(tmp, {"seg": {"init": "cam", "labels": "gt"},
                           "train_seg": {"freeze_stages": 2, "freeze_batchnorm": True, "lr": 0.05}})
    train_seg.run(params, ws)
    data = ws.dataset(params)
    assert seen == {i: data.mask_path(i) for i in data.ids("train")}  # seg.labels gt: the train masks

    model, _ = load_model(ws.model_dir("train_seg") / "model.pt")
    trained = model.backbone.state_dict()
    reference = build_deeplab("efficientnet_lite0", pretrained="none", num_classes=4).backbone
    reference.freeze(2, batchnorm=True)
    frozen = {n for n, p in reference.named_parameters() if not p.requires_grad}
    bn_buffers = {n for n, _ in reference.named_buffers() if "running" in n}
    later = {n for n, p in reference.named_parameters() if p.requires_grad and p.ndim == 4}
    assert frozen and bn_buffers and later
    for name in sorted(frozen | bn_buffers):
        torch.testing.assert_close(trained[name], cam_backbone[name], rtol=0, atol=0, msg=name)
    changed = [n for n in later if not torch.equal(trained[n], cam_backbone[n])]
    assert len(changed) == len(later), sorted(set(later) - set(changed))  # every unfrozen conv trained


def _label_hashes(ws) -> dict:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(ws.pseudo_labels.glob("*.png"))}


def test_pseudo_labels_gt_prob_reaches_the_crf(project):
    tmp, ws = project
    data = ws.dataset(_params(tmp, {}))
    cams_folder = ResumableFolder(ws.cams, stamp_of({"test": "cams from masks"}), ".npz")
    cams_folder.open()
    for i in data.ids("train"):
        # blurred, shifted CAMs from the masks: the CRF has boundaries to move
        cams, keys = cams_from_mask(data.read_mask(i), downscale=4, blur_sigma=3.0)
        cams_folder.write(i, cam_bytes(cams, keys))
    cams_folder.finish(data.ids("train"))
    runs = {}
    for gt_prob in (0.55, 0.95, 0.55):
        pseudo_labels.run(_params(tmp, {"pseudo_labels": {"gt_prob": gt_prob}}), ws)
        runs.setdefault(gt_prob, []).append(_label_hashes(ws))
    assert len(runs[0.55][0]) == len(data.ids("train"))
    assert runs[0.55][0] == runs[0.55][1]  # the same knob gives the same labels ...
    assert runs[0.55][0] != runs[0.95][0]  # ... and another gt_prob other labels


def test_clims_class_prompts_replace_a_class_name_in_the_prompts_only(monkeypatch):
    from textwsss.pipeline import train_cam

    class Recorder:
        def check_concepts(self, concepts, background):
            return list(concepts)

    monkeypatch.setattr("textwsss.guide.factory.matcher_from_params", lambda params, classes, device: Recorder())

    class Data:
        classes = ClassList.of(["cat", "person", "potted_plant"])

    params = parse_params({"clims": {"class_prompts": {"person": "player"}, "background_words": ["grass"]},
                           "guide": {"calibrate": False}})
    _, concepts, background = train_cam.build_guide(params, Data(), [], "cpu")
    assert concepts == ["cat", "player", "potted plant"] and background == ["grass"]
    assert Data.classes.prompts == ("cat", "person", "potted plant")  # the dataset's own names are untouched
    params = parse_params({"clims": {"class_prompts": {"person": "player"},
                                     "background_words": {"person": ["grass"]}}, "guide": {"calibrate": False}})
    _, _, background = train_cam.build_guide(params, Data(), [], "cpu")
    assert background == {"player": ["grass"]}  # per-class words follow the replaced prompt
