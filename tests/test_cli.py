"""The user commands: predict from a saved checkpoint, evaluate on any VOC root."""
import json

import numpy as np
import pytest
import torch

from textwsss.checkpoints import load_model, save_model
from textwsss.cli import main
from textwsss.models.factory import build_deeplab
from textwsss.segment import predict_labels
from textwsss.synthetic import write_voc_root
from textwsss.voc import image_path, read_image, read_mask


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_deeplab(backbone="efficientnet_lite0", pretrained="none", num_classes=21).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_model(path, model, stage="test")
    return path, model


@pytest.fixture
def root(tmp_path):
    write_voc_root(tmp_path / "voc", train=2, val=3, seed=1, size=64, num_classes=3)
    return tmp_path / "voc"


def test_predict_from_checkpoint_equals_the_model(checkpoint, root, tmp_path):
    path, model = checkpoint
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(path), str(root / "JPEGImages"), "--out", str(out)]) == 0
    for image_id in ("syn_0000", "syn_0003"):
        expected = predict_labels(model, read_image(image_path(root, image_id)))
        np.testing.assert_array_equal(read_mask(out / f"{image_id}.png"), expected)
        assert (out / f"{image_id}_overlay.jpg").is_file()


def test_checkpoint_rebuilds_without_params(checkpoint):
    path, model = checkpoint
    rebuilt, meta = load_model(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
    assert meta["stage"] == "test"


def test_evaluate_writes_seg_json(checkpoint, root, tmp_path):
    path, _ = checkpoint
    out = tmp_path / "val.json"
    assert main(["evaluate", "--root", str(root), "--split", "val", "--checkpoint", str(path),
                 "--out", str(out)]) == 0
    scores = json.loads(out.read_text())
    assert {"miou", "pixel_acc", "per_class"} <= set(scores) and 0 <= scores["miou"] <= 100


def test_evaluate_names_a_corrupt_image(checkpoint, root, tmp_path, caplog):
    path, _ = checkpoint
    bad = image_path(root, "syn_0003")
    bad.write_bytes(bad.read_bytes()[:300])
    assert main(["evaluate", "--root", str(root), "--split", "val", "--checkpoint", str(path),
                 "--out", str(tmp_path / "x.json")]) == 1
    assert "syn_0003.jpg" in caplog.text
    assert not (tmp_path / "x.json").exists()


def test_predict_missing_input_is_named(checkpoint, tmp_path, caplog):
    path, _ = checkpoint
    assert main(["predict", "--checkpoint", str(path), str(tmp_path / "nope.jpg"), "--out", str(tmp_path)]) == 1
    assert "nope.jpg" in caplog.text
