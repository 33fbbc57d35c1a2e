"""Nothing damaged is kept: the stages make_cam and pseudo_labels, run in this process on synthetic scenes with a
tiny untrained CAM network, check every file they keep against their folder's manifest; a damaged input file
stops the stage that reads it with its name."""
import json
import logging

import numpy as np
import pytest
import torch

from textwsss.cam import load_cam
from textwsss.data.images import read_mask
from textwsss.models.checkpoints import save_model
from textwsss.params import parse_params
from textwsss.pipeline import make_cam, prepare, pseudo_labels
from textwsss.pipeline.make_cam import cam_bytes
from textwsss.pipeline.resumable import ResumableFolder
from textwsss.pipeline.train_cam_baseline import cam_network
from textwsss.pipeline.workspace import Workspace
from textwsss.synthetic import write_voc_root

IDS = [f"syn_{i:04d}" for i in range(5)]


@pytest.fixture()
def project(tmp_path):
    """(params, workspace) after prepare, with an untrained CAM network as train_cam's model.pt."""
    write_voc_root(tmp_path / "voc", train=len(IDS), val=1, seed=0, size=48, num_classes=3)
    params = parse_params({"data": {"root": str(tmp_path / "voc"), "workers": 0},
                           "cam": {"pretrained": "none"},
                           "make_cam": {"scales": [1.0], "flip": False, "max_side": 0, "max_pixels": 0},
                           "pseudo_labels": {"workers": 1, "crf": {"iterations": 1}}})
    ws = Workspace(tmp_path / "project")
    prepare.run(params, ws)
    torch.manual_seed(0)
    classes = ws.dataset(params).classes
    save_model(ws.model_file("train_cam"), cam_network(params, classes).eval(), classes)
    return params, ws


def _folder(folder):
    """Every file of a folder (hidden ones too: stamp, manifest) by name, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _count_cams(monkeypatch) -> list:
    made = []
    real = make_cam.cam_bytes
    monkeypatch.setattr(make_cam, "cam_bytes", lambda *args: made.append(1) or real(*args))
    return made


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def _flip_a_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x04  # same size: only the hash can tell
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, reason, recomputed", [
    (_truncate, "size 100 bytes, the manifest says", 1),
    (_flip_a_bit, "content differs from the manifest's hash", 1),
    (lambda path: path.with_name("extra.npz").write_bytes(path.read_bytes()), "not written by this stage", 0),
])
def test_a_damaged_or_extra_file_is_found_on_resume(project, damage, reason, recomputed, monkeypatch, caplog):
    params, ws = project
    make_cam.run(params, ws)
    whole = _folder(ws.cams)
    assert ".manifest.json" in whole and not any(n.startswith(".journal") for n in whole)
    victim = ws.cams / f"{IDS[2]}.npz"
    damage(victim)
    made = _count_cams(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="textwsss.pipeline.resumable"):
        make_cam.run(params, ws)
    named = victim if recomputed else victim.with_name("extra.npz")
    assert [r.getMessage() for r in caplog.records if str(named) in r.getMessage() and reason in r.getMessage()]
    assert len(made) == recomputed
    assert _folder(ws.cams) == whole  # byte-identical to the uninterrupted run, manifest and stamp included


def test_a_changed_cam_recomputes_its_pseudo_label_and_no_other(project, monkeypatch):
    params, ws = project
    make_cam.run(params, ws)
    pseudo_labels.run(params, ws)
    before = {i: (ws.pseudo_labels / f"{i}.png").stat().st_mtime_ns for i in IDS}
    labelled = []
    real = pseudo_labels._label_one
    monkeypatch.setattr(pseudo_labels, "_label_one", lambda task: labelled.append(task[1]) or real(task))
    pseudo_labels.run(params, ws)
    assert labelled == []  # nothing changed: nothing recomputed

    # make_cam rewrites one CAM with other content (what a recomputation that changes its bytes leaves)
    cams, keys = load_cam(ws.cams / f"{IDS[1]}.npz")
    stamp = json.loads((ws.cams / ".stamp.json").read_text())
    cam_folder = ResumableFolder(ws.cams, stamp, ".npz")
    assert cam_folder.open() == len(IDS)
    (ws.cams / f"{IDS[1]}.npz").unlink()
    cam_folder.write(IDS[1], cam_bytes(np.zeros_like(cams), keys))
    cam_folder.finish(IDS)
    pseudo_labels.run(params, ws)
    assert labelled == [IDS[1]]
    assert (read_mask(ws.pseudo_labels / f"{IDS[1]}.png") == 0).all()  # all-zero CAMs: all background
    after = {i: (ws.pseudo_labels / f"{i}.png").stat().st_mtime_ns for i in IDS}
    assert {i for i in IDS if after[i] != before[i]} == {IDS[1]}


def test_a_cam_file_damaged_after_make_cam_stops_pseudo_labels_with_its_name(project):
    params, ws = project
    make_cam.run(params, ws)
    _flip_a_bit(ws.cams / f"{IDS[3]}.npz")
    with pytest.raises(ValueError, match=rf"{IDS[3]}\.npz: its content differs from what make_cam recorded.*"
                                         r"dvc repro -s -f make_cam"):
        pseudo_labels.run(params, ws)
    assert not (ws.pseudo_labels / f"{IDS[3]}.png").exists()


def test_a_damaged_model_file_names_itself_and_the_stage_that_makes_it(project):
    params, ws = project
    _truncate(ws.model_file("train_cam"))
    with pytest.raises(ValueError, match=r"train_cam/model\.pt, the output of the train_cam stage, is damaged.*"
                                         r"dvc repro -s -f train_cam"):
        make_cam.run(params, ws)
    ws.model_file("train_cam").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.pt is missing.*dvc repro train_cam"):
        make_cam.run(params, ws)


def test_a_damaged_baseline_stops_train_cam_with_its_name(project):
    from textwsss.pipeline import train_cam

    params, ws = project
    ws.model_file("train_cam_baseline").parent.mkdir(parents=True)
    ws.model_file("train_cam_baseline").write_bytes(b"PK\x03\x04 a copy that stopped here")
    with pytest.raises(ValueError, match=r"train_cam_baseline/model\.pt, the output of the train_cam_baseline "
                                         r"stage, is damaged.*dvc repro -s -f train_cam_baseline"):
        train_cam.run(params, ws)
