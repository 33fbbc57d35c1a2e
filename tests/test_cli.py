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
from textwsss.models.checkpoints import load_model, save_model
from textwsss.models.factory import build_deeplab
from textwsss.segment import predict_labels
from textwsss.synthetic import write_voc_root
from vocmini import image_path, read_image, read_mask


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_deeplab(backbone="efficientnet_lite0", pretrained="none", num_classes=21).eval()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_model(path, model, VOC, stage="test")
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
    # a threshold no softmax presence score reaches: each image keeps only the matcher's best class
    from textwsss.guide.factory import matcher_from_params
    from textwsss.params import load_params
    from textwsss.zeroshot.presence import presence_scores

    path, _ = checkpoint
    gated, plain = tmp_path / "gated", tmp_path / "plain"
    images = str(root / "JPEGImages")
    assert main(["predict", "--checkpoint", str(path), images, "--out", str(plain)]) == 0
    assert main(["predict", "--checkpoint", str(path), images, "--out", str(gated), "--class-gate", "1.0"]) == 0
    params = load_params()
    matcher = matcher_from_params(params, VOC, "cpu")
    background = matcher.check_concepts(params.zeroshot.background_words, background=True)
    changed = 0
    for png in sorted(gated.glob("*.png")):
        image = read_image(root / "JPEGImages" / f"{png.stem}.jpg")
        best = int(presence_scores(matcher, [image], list(VOC.prompts), background)[0].argmax())
        labels = read_mask(png)
        assert set(np.unique(labels)) <= {0, best + 1}, png
        changed += int((labels != read_mask(plain / png.name)).any())
    assert changed > 0  # the untrained model paints other classes than the matcher's
    assert main(["predict", "--checkpoint", str(path), images, "--out", str(gated), "--class-gate", "2"]) == 1
