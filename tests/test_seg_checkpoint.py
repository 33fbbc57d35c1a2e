"""The segmentation checkpoint carries everything its score depends on: train_seg records eval_seg's inference
options and the tuned class gate, eval_seg scores through the code `textwsss evaluate` runs, and the CLI on the
checkpoint alone (another directory, no params.yaml) reproduces seg.json."""
from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from textwsss.cli import main
from textwsss.data.classes import VOC
from textwsss.evaluation import load_segmentation
from textwsss.models.checkpoints import save_model
from textwsss.models.factory import build_cam_net, build_deeplab
from textwsss.params import parse_params
from textwsss.pipeline.workspace import Workspace
from textwsss.synthetic import write_voc_root
from vocmini import read_mask

TINY = {
    "data": {"workers": 0},
    "seg": {"labels": "gt", "pretrained": "none", "init": "imagenet", "aspp_channels": 16, "decoder_channels": 16},
    "train_seg": {"epochs": 1, "batch_size": 4, "crop_size": 64, "scale_range": [1.0, 1.0]},
    # a working size below the 64 px images, so whether the recorded one is used shows in the labels
    "eval_seg": {"figures": 0, "max_side": 48, "class_gate": "matcher"},
}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _run(params, ws, *stages):
    for stage in stages:
        importlib.import_module(f"textwsss.pipeline.{stage}").run(params, ws)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """prepare, train_seg and eval_seg (the real stage functions) on 6 train + 3 val synthetic scenes."""
    tmp = tmp_path_factory.mktemp("segckpt")
    write_voc_root(tmp / "voc", train=6, val=3, seed=0, size=64, num_classes=3)
    params = parse_params(_merge(TINY, {"data": {"root": str(tmp / "voc")}}))
    ws = Workspace(tmp / "project")
    torch.manual_seed(0)
    _run(params, ws, "prepare", "train_seg", "eval_seg")
    seg = json.loads((ws.metrics / "seg.json").read_text())
    return params, ws, tmp / "voc", seg


def _model(ws):
    return ws.model_dir("train_seg") / "model.pt"


def _varied_model():
    """A random DeepLab that paints many labels, each region its own: its random features vary little across an
    image and its classifier bias a lot across labels, so without the bias the image decides the labels (the
    tiny trained model paints one label everywhere, where no inference option can change anything)."""
    torch.manual_seed(0)
    model = build_deeplab(backbone="efficientnet_lite0", pretrained="none", num_classes=21, aspp_channels=16,
                          decoder_channels=16).eval()
    with torch.no_grad():
        model.classifier.bias.zero_()
    return model


def _with_record(path, record):
    save_model(path, _varied_model(), VOC, evaluation=record, stage="test")
    return path


def test_checkpoint_records_eval_seg_options_and_the_tuned_gate(trained):
    params, ws, _, seg = trained
    ckpt = load_segmentation(_model(ws))
    assert ckpt.record["inference"] == {"max_side": 48, "scales": [1.0], "flip": False, "crf": None}
    gate = ckpt.record["class_gate"]
    assert gate["threshold"] == seg["class_gate"]["threshold"]
    assert gate["class_f1_train"] == seg["class_gate"]["class_f1_train"]
    assert gate["class_concepts"] == list(VOC.prompts)
    assert gate["matcher"]["kind"] == "imagenet" and gate["matcher"]["prompt"] == params.guide.prompt
    # the stand-in drops background words it has no ImageNet classes for; what it kept is what it used
    assert gate["background_concepts"] and set(gate["background_concepts"]) <= set(params.zeroshot.background_words)
    assert set(seg) >= {"miou", "pixel_acc", "per_class", "ungated", "class_gate", "note"}


def test_evaluate_from_another_directory_without_params_reproduces_seg_json(trained, tmp_path):
    _, ws, root, seg = trained
    assert seg["miou"] != seg["ungated"]["miou"]  # the gate matters here, so reproducing it is a real check
    # the installed console script, run where no params.yaml is; a params read would fail on the missing file
    env = {**os.environ, "TEXTWSSS_PARAMS": str(tmp_path / "absent-params.yaml"), "HF_HUB_OFFLINE": "1"}
    script = Path(sys.executable).parent / "textwsss"
    result = subprocess.run([str(script), "evaluate", "--checkpoint", str(_model(ws)), "--root", str(root),
                             "--split", "val", "--out", "x.json"], cwd=tmp_path, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    got = json.loads((tmp_path / "x.json").read_text())
    assert abs(got["miou"] - seg["miou"]) < 1e-6
    assert abs(got["ungated"]["miou"] - seg["ungated"]["miou"]) < 1e-6
    assert abs(got["pixel_acc"] - seg["pixel_acc"]) < 1e-6
    assert got["class_gate"]["threshold"] == seg["class_gate"]["threshold"]


def _evaluate(ws, root, out, *flags):
    assert main(["evaluate", "--checkpoint", str(_model(ws)), "--root", str(root), "--split", "val",
                 "--out", str(out), *flags]) == 0
    return json.loads(Path(out).read_text())


def test_class_gate_flags(trained, tmp_path):
    _, ws, root, seg = trained
    off = _evaluate(ws, root, tmp_path / "off.json", "--class-gate", "none")
    assert abs(off["miou"] - seg["ungated"]["miou"]) < 1e-6 and "class_gate" not in off
    # threshold 0: every presence score reaches it, so every class may be painted: the model's own labels
    every = _evaluate(ws, root, tmp_path / "zero.json", "--class-gate", "0")
    assert abs(every["miou"] - seg["ungated"]["miou"]) < 1e-6
    assert every["class_gate"]["threshold"] == 0.0


def _predict(model, root, out, *flags) -> dict[str, np.ndarray]:
    images = [str(p) for p in sorted((root / "JPEGImages").glob("*.jpg"))[-2:]]
    assert main(["predict", "--checkpoint", str(model), *images, "--out", str(out), *flags]) == 0
    return {p.stem: read_mask(p) for p in sorted(Path(out).glob("*.png"))}


def _differs(a: dict, b: dict) -> bool:
    assert a.keys() == b.keys()
    return any((a[k] != b[k]).any() for k in a)


def test_the_recorded_options_are_the_default_and_each_flag_reaches_the_labels(trained, tmp_path):
    _, ws, root, _ = trained
    model = _with_record(tmp_path / "model.pt", load_segmentation(_model(ws)).record)
    default = _predict(model, root, tmp_path / "default")
    recorded = _predict(model, root, tmp_path / "recorded", "--max-side", "48", "--scales", "1", "--no-flip",
                        "--no-crf")
    assert not _differs(default, recorded)
    ungated = _predict(model, root, tmp_path / "ungated", "--class-gate", "none")
    assert _differs(default, ungated)
    # each option against the same ungated labels (the gate's matcher is built once less per call)
    for name, flags in {"max-side": ["--max-side", "0"], "scales": ["--scales", "0.5"], "flip": ["--flip"],
                        "crf": ["--crf"]}.items():
        assert _differs(ungated, _predict(model, root, tmp_path / name, "--class-gate", "none", *flags)), name


def test_changed_eval_options_resume_training_and_reach_seg_json(trained, tmp_path, caplog):
    params, ws, root, seg = trained
    shutil.copytree(ws.root, tmp_path / "project")
    ws2 = Workspace(tmp_path / "project")
    before_ckpt = (ws2.model_dir("train_seg") / "checkpoint.pt").read_bytes()
    before = torch.load(_model(ws2), weights_only=False)["state_dict"]
    changed = params.model_copy(update={"eval_seg": params.eval_seg.model_copy(
        update={"scales": [1.0, 0.75], "flip": True, "postprocess_crf": True})})
    with caplog.at_level(logging.INFO):
        _run(changed, ws2, "train_seg")
    assert "resuming train_seg" in caplog.text and "train_seg epoch" not in caplog.text  # no epoch trained
    assert (ws2.model_dir("train_seg") / "checkpoint.pt").read_bytes() == before_ckpt
    after = torch.load(_model(ws2), weights_only=False)["state_dict"]
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert load_segmentation(_model(ws2)).record["inference"]["flip"] is True
    _run(changed, ws2, "eval_seg")
    got = _evaluate(ws2, root, tmp_path / "x.json")
    assert abs(got["miou"] - json.loads((ws2.metrics / "seg.json").read_text())["miou"]) < 1e-6


def test_eval_seg_scores_with_the_recorded_scales_flip_and_crf(trained, tmp_path):
    params, ws, root, _ = trained
    shutil.copytree(ws.root, tmp_path / "project")
    ws2 = Workspace(tmp_path / "project")
    record = load_segmentation(_model(ws)).record
    scores = {}
    for name, inference in {"recorded": record["inference"],
                            "scales": {**record["inference"], "scales": [1.0, 0.5]},
                            "flip": {**record["inference"], "flip": True},
                            "crf": {**record["inference"], "crf": params.eval_seg.crf.model_dump()}}.items():
        _with_record(_model(ws2), {**record, "inference": inference, "class_gate": None})
        _run(params, ws2, "eval_seg")
        # the confusion matrix: a random model's IoUs are near 0 whatever the options, its pixel counts are not
        scores[name] = json.loads((ws2.plots / "seg_confusion.json").read_text())["matrix"]
    for name in ("scales", "flip", "crf"):
        assert scores[name] != scores["recorded"], name


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_cam_network_is_named_as_such(command, tmp_path, caplog):
    cam = tmp_path / "model.pt"
    save_model(cam, build_cam_net(pretrained="none"), VOC, stage="train_cam")
    write_voc_root(tmp_path / "voc", train=1, val=1, seed=0, size=32, num_classes=2)
    args = ([str(tmp_path / "voc" / "JPEGImages"), "--out", str(tmp_path / "pred")] if command == "predict" else
            ["--root", str(tmp_path / "voc"), "--split", "val", "--out", str(tmp_path / "x.json")])
    assert main([command, "--checkpoint", str(cam), *args]) == 1
    assert "a CAM network" in caplog.text and "train_cam" in caplog.text
    assert "data/train_seg/model.pt" in caplog.text and "predicts 20 labels" not in caplog.text


def test_zeroshot_records_why_the_label_free_baseline_is_skipped(voc_mini, tmp_path, caplog):
    from layout_builders import TAG_CLASSES, tags_root

    root = tags_root(voc_mini, tmp_path / "tags")  # image-level tags, no masks at all
    params = parse_params({"data": {"layout": "tags", "root": str(root), "workers": 0},
                           "clims": {"synonyms": {k: [v] for k, v in TAG_CLASSES.items()}},
                           "zeroshot": {"max_side": 64}})
    ws = Workspace(tmp_path / "project")
    with caplog.at_level(logging.WARNING):
        _run(params, ws, "prepare", "zeroshot")
    zeroshot = json.loads((ws.metrics / "zeroshot.json").read_text())
    assert "train images with masks" in zeroshot["label_free"]["skipped"]
    assert "label-free zero-shot baseline skipped" in caplog.text
    assert zeroshot["miou"] is None and "note" in zeroshot  # the rest of the layout as before
