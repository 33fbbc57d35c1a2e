"""A model file (model.pt of a training stage) carries the digest of its content and reading it checks it: a byte
changed inside a tensor's storage, which torch.load reads without a word, is refused with the file named; a stage
that loads another stage's model names that stage too (make_cam, train_seg's seg.init cam, eval_seg, tas)."""
from __future__ import annotations

import re
import struct
import zipfile

import pytest
import torch

from textwsss.evaluation import evaluation_record, load_segmentation
from textwsss.guide.tiny import register_tiny_configs
from textwsss.models.checkpoints import FORMAT, load_model, read_checkpoint, save_model
from textwsss.models.factory import build_deeplab
from textwsss.params import parse_params
from textwsss.pipeline import eval_seg, make_cam, prepare, tas
from textwsss.pipeline.train_cam_baseline import cam_network
from textwsss.pipeline.train_seg import init_backbone_from_cam
from textwsss.pipeline.workspace import Workspace
from textwsss.synthetic import write_voc_root

DAMAGED = r"damaged: content does not match its recorded digest"


def flip_inside_a_tensor(path) -> str:
    """Flips one bit in the middle of the largest tensor storage of a torch zip file, found from the zip's own
    directory (local header: 30 bytes, then the name and the extra field, then the stored bytes), so the archive
    stays valid and only the weights change. Returns the storage's entry name."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        storages = [i for i in zf.infolist() if re.fullmatch(r".*/data/\d+", i.filename)]
        info = max(storages, key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED, "torch stores tensors uncompressed"
    start = info.header_offset
    assert data[start:start + 4] == b"PK\x03\x04"
    name_len, extra_len = struct.unpack("<HH", data[start + 26:start + 30])
    data[start + 30 + name_len + extra_len + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return info.filename


@pytest.fixture()
def project(tmp_path):
    """(params, workspace) after prepare, with untrained networks as train_cam's and train_seg's model.pt."""
    write_voc_root(tmp_path / "voc", train=4, val=2, seed=0, size=48, num_classes=3)
    params = parse_params({
        "data": {"root": str(tmp_path / "voc"), "workers": 0},
        "cam": {"pretrained": "none"},
        "make_cam": {"scales": [1.0], "flip": False, "max_side": 0, "max_pixels": 0},
        "seg": {"pretrained": "none", "init": "cam", "aspp_channels": 16, "decoder_channels": 16},
        "eval_seg": {"figures": 0, "class_gate": "none"},
        "guide": {"kind": "open_clip", "arch": "tiny-vit", "pretrained": "none"},
        "tas": {"captioner": False, "use_seg_model": True, "min_area": 10, "max_masks": 4, "max_side": 0},
    })
    register_tiny_configs()  # tas's matcher: open_clip's tiny-vit, random weights
    ws = Workspace(tmp_path / "project")
    prepare.run(params, ws)
    torch.manual_seed(0)
    data = ws.dataset(params)
    save_model(ws.model_file("train_cam"), cam_network(params, data.classes).eval(), data.classes,
               stage="train_cam")
    save_model(ws.model_file("train_seg"), _deeplab(params, data.classes), data.classes, stage="train_seg",
               evaluation=evaluation_record(params, data, "cpu"))
    return params, ws


def _deeplab(params, classes):
    s = params.seg
    return build_deeplab(backbone=s.backbone, pretrained="none", num_classes=classes.num_labels,
                         aspp_channels=s.aspp_channels, decoder_channels=s.decoder_channels).eval()


def test_a_flipped_bit_in_a_tensor_is_read_silently_by_torch_and_refused_by_name(project):
    _, ws = project
    path = ws.model_file("train_cam")
    written = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    flip_inside_a_tensor(path)
    raw = torch.load(path, map_location="cpu", weights_only=False)  # the premise: the zip still opens
    changed = [k for k in written if not torch.equal(written[k], raw["state_dict"][k])]
    assert len(changed) == 1 and (written[changed[0]] != raw["state_dict"][changed[0]]).sum() == 1
    for read in (read_checkpoint, load_model):
        with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + DAMAGED):
            read(path)


def test_a_changed_value_outside_the_weights_is_refused_too(project):
    _, ws = project
    path = ws.model_file("train_cam")
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["classes"] = {**state["classes"], "names": list(reversed(state["classes"]["names"]))}
    torch.save(state, path)  # the old digest kept: what an edit of the file without this library gives
    with pytest.raises(ValueError, match=DAMAGED):
        read_checkpoint(path)


def test_an_intact_file_loads_its_weights_and_a_file_without_digest_still_loads(project, tmp_path):
    params, ws = project
    path = ws.model_file("train_cam")
    written = torch.load(path, map_location="cpu", weights_only=False)
    assert isinstance(written.pop("digest"), str)
    model, meta = load_model(path)
    assert meta == {"stage": "train_cam"}
    assert all(torch.equal(v, written["state_dict"][k]) for k, v in model.state_dict().items())
    old = tmp_path / "old.pt"  # as save_model wrote it before the digest: the same entries, no digest
    torch.save(written, old)
    assert read_checkpoint(old)["format"] == FORMAT
    model, _ = load_model(old)
    assert all(torch.equal(v, written["state_dict"][k]) for k, v in model.state_dict().items())


def test_make_cam_names_the_damaged_model_file_and_train_cam(project):
    params, ws = project
    flip_inside_a_tensor(ws.model_file("train_cam"))
    with pytest.raises(ValueError, match=r"train_cam/model\.pt, the output of the train_cam stage, is damaged or "
                                         r"unusable \(.*" + DAMAGED + r".*dvc repro -s -f train_cam"):
        make_cam.run(params, ws)
    assert not list(ws.cams.rglob("*.npz"))


def test_seg_init_cam_takes_the_cam_backbone_and_names_train_cam_when_it_is_damaged(project):
    params, ws = project
    classes = ws.dataset(params).classes
    model = _deeplab(params, classes)
    init_backbone_from_cam(model, ws)
    cam = torch.load(ws.model_file("train_cam"), map_location="cpu", weights_only=False)["state_dict"]
    got = model.backbone.state_dict()
    assert got and all(torch.equal(v, cam[f"backbone.{k}"]) for k, v in got.items())
    flip_inside_a_tensor(ws.model_file("train_cam"))
    with pytest.raises(ValueError, match=r"the output of the train_cam stage, is damaged.*" + DAMAGED):
        init_backbone_from_cam(_deeplab(params, classes), ws)
    ws.model_file("train_cam").unlink()
    with pytest.raises(FileNotFoundError, match=r"train_cam/model\.pt is missing.*dvc repro train_cam"):
        init_backbone_from_cam(_deeplab(params, classes), ws)


def test_eval_seg_and_tas_name_train_seg_and_the_cli_path_names_the_file(project):
    params, ws = project
    path = ws.model_file("train_seg")
    assert load_segmentation(path).record["class_gate"] is None  # intact: loads
    flip_inside_a_tensor(path)
    stage_error = r"train_seg/model\.pt, the output of the train_seg stage, is damaged.*" + DAMAGED + \
        r".*dvc repro -s -f train_seg"
    with pytest.raises(ValueError, match=stage_error):
        eval_seg.run(params, ws)
    with pytest.raises(ValueError, match=stage_error):
        tas.run(params, ws)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + DAMAGED) as err:
        load_segmentation(path)  # `textwsss evaluate` / `predict`: a checkpoint from anywhere, no stage
    assert "stage" not in str(err.value)
    assert not (ws.metrics / "seg.json").exists()
