"""The user commands: predict from a saved checkpoint, evaluate on any dataset layout."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from textwsss.cli import main
from textwsss.data.classes import VOC
from textwsss.evaluation import RECORD_VERSION, InferenceOptions
from textwsss.models.checkpoints import load_model, save_model
from textwsss.models.factory import build_deeplab
from textwsss.segment import predict_labels
from textwsss.synthetic import write_voc_root
from vocmini import image_path, read_image, read_mask


# what train_seg records with eval_seg's options at a long side of 1024 and no class gate
RECORD = {"version": RECORD_VERSION, "inference": InferenceOptions(max_side=1024).to_record(), "class_gate": None}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_deeplab(backbone="efficientnet_lite0", pretrained="none", num_classes=21).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_model(path, model, VOC, evaluation=RECORD, stage="test")
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
        expected = predict_labels(model, read_image(image_path(root, image_id)), VOC)
        np.testing.assert_array_equal(read_mask(out / f"{image_id}.png"), expected)
        assert (out / f"{image_id}_overlay.jpg").is_file()


def test_checkpoint_rebuilds_without_params(checkpoint):
    path, model = checkpoint
    rebuilt, meta = load_model(path)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
    assert meta["stage"] == "test" and rebuilt.classes == VOC


def _plain_scores(pred_dir: Path, root: Path, ids) -> tuple[float, float]:
    """(mIoU, pixel accuracy) in percent of predict's PNGs against the masks, counted here pixel by pixel: the
    IoU of every label that occurs in a prediction or a mask, void (255) pixels left out."""
    inter, union, correct, total = np.zeros(21), np.zeros(21), 0, 0
    for i in ids:
        pred, gt = read_mask(pred_dir / f"{i}.png"), read_mask(root / "SegmentationClass" / f"{i}.png")
        valid = gt != 255
        for label in range(21):
            p, g = (pred == label) & valid, (gt == label) & valid
            inter[label] += (p & g).sum()
            union[label] += (p | g).sum()
        correct += ((pred == gt) & valid).sum()
        total += valid.sum()
    present = union > 0
    return 100 * float((inter[present] / union[present]).mean()), 100 * correct / total


def test_evaluate_writes_seg_json(checkpoint, root, tmp_path):
    path, _ = checkpoint
    out = tmp_path / "val.json"
    assert main(["evaluate", "--root", str(root), "--split", "val", "--checkpoint", str(path),
                 "--out", str(out)]) == 0
    scores = json.loads(out.read_text())
    ids = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert main(["predict", "--checkpoint", str(path), *[str(image_path(root, i)) for i in ids],
                 "--out", str(tmp_path / "pred")]) == 0
    miou, pixel_acc = _plain_scores(tmp_path / "pred", root, ids)
    assert scores["miou"] == pytest.approx(miou, abs=1e-6)
    assert scores["pixel_acc"] == pytest.approx(pixel_acc, abs=1e-6)
    assert scores["n_images"] == len(ids) and set(scores["per_class"]) == set(VOC.label_names)


def test_a_checkpoint_without_an_evaluation_record_says_so(checkpoint, root, tmp_path, caplog):
    _, model = checkpoint
    old = tmp_path / "old.pt"
    save_model(old, model, VOC, stage="test")  # as train_seg wrote it before checkpoints carried a record
    assert main(["evaluate", "--root", str(root), "--split", "val", "--checkpoint", str(old),
                 "--out", str(tmp_path / "x.json")]) == 0
    assert "carries no evaluation record" in caplog.text and "dvc repro" in caplog.text


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


def test_predict_finishes_every_readable_image_and_names_the_bad_one(checkpoint, tmp_path, caplog):
    path, _ = checkpoint
    write_voc_root(tmp_path / "voc", train=2, val=3, seed=2, size=64, num_classes=3)
    bad = image_path(tmp_path / "voc", "syn_0002")
    bad.write_bytes(bad.read_bytes()[:400])  # a truncated JPEG in the middle of the folder
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(path), str(tmp_path / "voc" / "JPEGImages"), "--out", str(out)]) == 1
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == [f"syn_000{i}.png" for i in (0, 1, 3, 4)]
    assert "syn_0002.jpg" in caplog.text and "1 input(s) could not be read" in caplog.text


def test_written_files_get_the_mode_of_the_umask(checkpoint, root, tmp_path):
    path, _ = checkpoint
    old = os.umask(0o022)
    try:
        assert main(["predict", "--checkpoint", str(path), str(image_path(root, "syn_0000")), "--out",
                     str(tmp_path / "pred")]) == 0
    finally:
        os.umask(old)
    for f in (tmp_path / "pred").iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f


def test_predict_on_a_24_megapixel_photo_stays_under_2_gb(checkpoint, tmp_path):
    from PIL import Image

    path, _ = checkpoint
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (60, 40, 3), dtype=np.uint8)
    Image.fromarray(small).resize((6000, 4000), Image.BILINEAR).save(tmp_path / "big.jpg", quality=85)
    # the command in its own process, which reports its own peak resident set size (kB on Linux)
    script = ("import resource, sys; from textwsss.cli import main; rc = main(sys.argv[1:]); "
              "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    result = subprocess.run([sys.executable, "-c", script, "predict", "--checkpoint", str(path),
                             str(tmp_path / "big.jpg"), "--out", str(tmp_path / "pred")],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    peak_kb = int(result.stdout.split("PEAK_KB")[1].split()[0])
    assert read_mask(tmp_path / "pred" / "big.png").shape == (4000, 6000)  # labels at the photo's own size
    assert peak_kb < 2 * 1024 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
    print(f"24-megapixel predict: peak RSS {peak_kb / 1024:.0f} MB")


def test_predict_with_the_class_gate_paints_the_matchers_class_only(checkpoint, root, tmp_path):
    # the gate's matcher gives aeroplane every ImageNet class: its log-mass is 0, every other class's is below
    # (a softmax never puts all the mass on a strict subset), and without background words aeroplane has the
    # highest presence score in any image. A threshold of 1.0 no score reaches leaves each image its best class.
    _, model = checkpoint
    spec = {"kind": "imagenet", "arch": "ViT-B-32", "pretrained": "none", "prompt": "a photo of {}.",
            "temperature": 1.0, "synonyms": {}, "imagenet_classes": {"aeroplane": list(range(1000))}}
    gate = {"kind": "matcher", "matcher": spec, "matcher_state": None, "class_concepts": list(VOC.prompts),
            "background_concepts": [], "threshold": 1.0, "class_f1_train": None}
    path = tmp_path / "gated.pt"
    save_model(path, model, VOC, evaluation={**RECORD, "class_gate": gate}, stage="test")
    outs = {name: tmp_path / name for name in ("gated", "plain", "zero")}
    images = str(root / "JPEGImages")
    assert main(["predict", "--checkpoint", str(path), images, "--out", str(outs["gated"])]) == 0  # the stored gate
    assert main(["predict", "--checkpoint", str(path), images, "--out", str(outs["plain"]), "--class-gate",
                 "none"]) == 0
    # threshold 0: every score reaches it, every class may be painted
    assert main(["predict", "--checkpoint", str(path), images, "--out", str(outs["zero"]), "--class-gate",
                 "0"]) == 0
    changed = 0
    for png in sorted(outs["gated"].glob("*.png")):
        labels = read_mask(png)
        assert set(np.unique(labels)) <= {0, 1}, png
        changed += int((labels != read_mask(outs["plain"] / png.name)).any())
        np.testing.assert_array_equal(read_mask(outs["zero"] / png.name), read_mask(outs["plain"] / png.name))
    assert changed > 0  # the untrained model paints other classes than aeroplane
    assert main(["predict", "--checkpoint", str(path), images, "--out", str(outs["gated"]), "--class-gate", "2"]) == 1
