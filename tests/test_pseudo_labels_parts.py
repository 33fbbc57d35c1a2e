"""pseudo_labels on tiny hand-made inputs (fast, no voc-mini): the input checks with their messages, each mode's
rule pixel by pixel, the worker body, make_cam's hashes, the thread limits of the workers, the stage on a
synthetic dataset, and the CAMs made from a mask. Expected values by hand or by a plain numpy reference."""
import hashlib
import json
import os

import numpy as np
import pytest

from textwsss.crf import CRFParams
from textwsss.data.images import read_mask
from textwsss.io import save_npz
from textwsss.params import parse_params
from textwsss.pipeline import prepare, pseudo_labels
from textwsss.pipeline.make_cam import cam_bytes
from textwsss.pipeline.pseudo_labels import (
    _THREAD_ENV, _label_one, _single_threaded_children, cam_hashes, cams_from_mask, generate_pseudo_labels,
    pseudo_label,
)
from textwsss.pipeline.resumable import ResumableFolder
from textwsss.pipeline.workspace import Workspace
from textwsss.synthetic import write_voc_root

NO_CRF = CRFParams(iterations=0)  # 0 mean-field steps: the unary's own argmax
GREY = np.full((1, 4, 3), 128, np.uint8)


# ---- the checks of the inputs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("image, cams, keys, message", [
    (GREY, np.zeros((1, 4), np.float32), [0], r"^im7: cams must be \(C, H, W\), got shape \(1, 4\)$"),
    (GREY, np.zeros((2, 1, 4), np.float32), [0], r"^im7: 1 keys for 2 CAMs$"),
    (GREY, np.zeros((1, 1, 4), np.float32), [-1], r"^im7: keys must be class indices 0\.\.2, got \[-1\]$"),
    (GREY, np.zeros((1, 1, 4), np.float32), [3], r"^im7: keys must be class indices 0\.\.2, got \[3\]$"),
    (GREY.astype(np.float32), np.zeros((1, 1, 4), np.float32), [0],
     r"^im7: image must be uint8 \(H, W, 3\), got float32 \(1, 4, 3\)$"),
    (GREY[..., :1], np.zeros((1, 1, 4), np.float32), [0], r"^im7: image must be uint8 \(H, W, 3\), got uint8 \(1, 4, 1\)$"),
    (GREY[0], np.zeros((1, 1, 4), np.float32), [0], r"^im7: image must be uint8 \(H, W, 3\), got uint8 \(4, 3\)$"),
    (GREY, np.zeros((1, 4, 1), np.float32), [0], r"^im7: image size \(1, 4\) differs from its CAM size \(4, 1\)$"),
])
def test_bad_inputs_are_named(image, cams, keys, message):
    with pytest.raises(ValueError, match=message):
        pseudo_label(image, cams, np.array(keys), "none", image_id="im7", num_classes=3)


def test_keys_are_checked_against_the_class_count_only_when_it_is_given():
    cams = np.ones((1, 1, 4), np.float32)
    np.testing.assert_array_equal(pseudo_label(GREY, cams, np.array([[25]]), "none"), [[26] * 4])  # (1, 1) keys too
    np.testing.assert_array_equal(pseudo_label(GREY, cams, np.array([2]), "none", num_classes=3), [[3] * 4])
    with pytest.raises(ValueError, match=r"keys must be class indices 0\.\.0, got \[-2\]"):
        pseudo_label(GREY, cams, np.array([-2]), "none")


def test_cam_values_past_one_or_below_zero_are_clipped():
    # float16 CAMs round past 1: 1.01 is clipped to 1, so in 'prob' its background 1 - 1 = 0 stays in range
    cams = np.array([[[1.01, -0.5, 0.5, 1.5]]], np.float16)
    out = pseudo_label(GREY, cams, np.array([0]), "prob", prob_alpha=0.5, confidence=0.9, crf=NO_CRF)
    # background = (1 - cam) ** 0.5 with cam clipped to [0, 1]: 0, 1, 0.707 (p(object) 0.41 -> ignored), 0
    np.testing.assert_array_equal(out, [[1, 0, 255, 1]])
    # 'none' with threshold 0: a CAM of -0.5 clipped to 0 ties the background, which comes first and wins
    np.testing.assert_array_equal(pseudo_label(GREY, cams, np.array([0]), "none", threshold=0.0), [[1, 0, 1, 1]])


def test_bad_mode_and_alpha_are_rejected():
    cams = np.zeros((1, 1, 4), np.float32)
    with pytest.raises(ValueError, match=r"^mode must be one of \('irn', 'prob', 'none'\), got 'softmax'$"):
        pseudo_label(GREY, cams, np.array([0]), "softmax")
    for alpha in (0.0, -1.0):
        with pytest.raises(ValueError, match=rf"^prob_alpha must be > 0, got {alpha}$"):
            pseudo_label(GREY, cams, np.array([0]), "prob", prob_alpha=alpha)


# ---- each mode's rule -------------------------------------------------------------------------------------------
def test_none_mode_takes_the_threshold_as_the_background_score():
    cams = np.array([[[0.5, 0.2, 0.4, 0.1]], [[0.3, 0.4, 0.45, 0.0]]], np.float32)
    keys = np.array([0, 6])
    np.testing.assert_array_equal(pseudo_label(GREY, cams, keys, "none", threshold=0.42), [[1, 0, 7, 0]])
    np.testing.assert_array_equal(pseudo_label(GREY, cams, keys, "none", threshold=0.15), [[1, 7, 7, 0]])


def test_irn_mode_thresholds_and_the_ignore_region():
    cams = np.array([[[0.5, 0.3, 0.1, 0.02]], [[0.0, 0.0, 0.0, 0.2]]], np.float32)
    keys = np.array([3, 9])
    # fg-confident map (background 0.4): [4, 0, 0, 0]; bg-confident (0.08): [4, 4, 4, 10]
    out = pseudo_label(GREY, cams, keys, "irn", fg_threshold=0.4, bg_threshold=0.08, crf=NO_CRF)
    np.testing.assert_array_equal(out, [[4, 255, 255, 255]])
    assert out.dtype == np.uint8
    # fg (0.25): [4, 4, 0, 0]; bg (0.15): [4, 4, 0, 10] -> pixel 2 background in both maps
    out = pseudo_label(GREY, cams, keys, "irn", fg_threshold=0.25, bg_threshold=0.15, crf=NO_CRF)
    np.testing.assert_array_equal(out, [[4, 4, 0, 255]])


def test_irn_is_the_default_mode_and_keeps_the_first_class():
    # key 0 is dataset label 1 (VOC's aeroplane): fg-confident there, background in both maps elsewhere
    cams = np.array([[[0.9, 0.0, 0.9, 0.0]]], np.float32)
    np.testing.assert_array_equal(pseudo_label(GREY, cams, np.array([0]), crf=NO_CRF), [[1, 0, 1, 0]])


def test_inputs_without_an_image_id_are_named_image():
    with pytest.raises(ValueError, match=r"^<image>: 1 keys for 2 CAMs$"):
        pseudo_label(GREY, np.zeros((2, 1, 4), np.float32), np.array([0]), "none")


def test_prob_mode_keeps_a_pixel_whose_probability_equals_the_confidence():
    # background 1 - 0.5 = 0.5 against the CAM's 0.5: the background (first) at exactly 0.5, not below 0.5
    cams = np.full((1, 1, 4), 0.5, np.float32)
    np.testing.assert_array_equal(pseudo_label(GREY, cams, np.array([0]), "prob", confidence=0.5, crf=NO_CRF),
                                  [[0, 0, 0, 0]])
    np.testing.assert_array_equal(pseudo_label(GREY, cams, np.array([0]), "prob", confidence=0.51, crf=NO_CRF),
                                  [[255] * 4])


def test_irn_mode_passes_gt_prob_to_the_crf():
    # gt_prob 0.2 with 3 labels: each given label gets 0.2, each other one 0.4, so the unary's argmax is the
    # lowest other label: background -> label of key 0, an object -> background
    cams = np.array([[[0.9, 0.0, 0.0, 0.0]], [[0.0, 0.9, 0.0, 0.0]]], np.float32)
    out = pseudo_label(GREY, cams, np.array([1, 4]), "irn", gt_prob=0.2, crf=NO_CRF)
    # fg map local labels [1, 2, 0, 0] -> after the unary [0, 0, 1, 1]; dataset labels [0, 0, 2, 2]
    np.testing.assert_array_equal(out, [[0, 0, 2, 2]])


def test_prob_mode_normalises_and_keeps_confident_pixels():
    cams = np.array([[[0.8, 0.3, 0.0, 0.5]], [[0.8, 0.1, 0.0, 0.0]]], np.float32)
    keys = np.array([2, 5])
    # background (1 - max) = 0.2, 0.7, 1, 0.5; probabilities: [0.2, 0.8, 0.8] / 1.8, [0.7, 0.3, 0.1] / 1.1,
    # [1, 0, 0], [0.5, 0.5, 0] / 1 -> argmax object 3 (first of the tie), bg, bg, bg (tie: the first)
    out = pseudo_label(GREY, cams, keys, "prob", confidence=0.6, crf=NO_CRF)
    np.testing.assert_array_equal(out, [[255, 0, 0, 255]])
    out = pseudo_label(GREY, cams, keys, "prob", confidence=0.4, crf=NO_CRF)
    np.testing.assert_array_equal(out, [[3, 0, 0, 0]])


def test_prob_mode_without_objects_is_background_everywhere():
    out = pseudo_label(GREY, np.zeros((0, 1, 4), np.float32), np.zeros(0, np.int64), "prob", crf=NO_CRF)
    np.testing.assert_array_equal(out, [[0, 0, 0, 0]])


# ---- the worker body and make_cam's hashes ------------------------------------------------------------------
def _grey_png(path, h=1, w=4):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)
    return path


def test_label_one_writes_the_png_and_returns_its_size_and_hash(tmp_path):
    image = _grey_png(tmp_path / "im.png")
    save_npz(tmp_path / "im.npz", cams=np.array([[[0.9, 0.0, 0.9, 0.0]]], np.float16), keys=np.array([4]))
    cam_md5 = hashlib.md5((tmp_path / "im.npz").read_bytes()).hexdigest()
    task = (image, "im", tmp_path / "im.npz", cam_md5, tmp_path / "out" / "im.png", "none", {"threshold": 0.5})
    image_id, size, md5 = _label_one(task)
    data = (tmp_path / "out" / "im.png").read_bytes()
    assert (image_id, size, md5) == ("im", len(data), hashlib.md5(data).hexdigest())
    np.testing.assert_array_equal(read_mask(tmp_path / "out" / "im.png"), [[5, 0, 5, 0]])
    # no recorded hash: not checked; a wrong one: the CAM file is named with how to make it again
    assert _label_one((*task[:3], None, *task[4:]))[0] == "im"
    with pytest.raises(ValueError, match=r"im\.npz: its content differs from what make_cam recorded in its manifest"
                                         r".*`dvc repro -s -f make_cam`$"):
        _label_one((*task[:3], "0" * 32, *task[4:]))


def test_cam_hashes_reads_the_manifest_by_path_below_the_folder(tmp_path):
    cams = ResumableFolder(tmp_path / "cams", {}, ".npz")
    cams.open()
    cams.write("a", b"AAA")
    cams.write("sub/b", b"BB")
    cams.finish(["a", "sub/b"])
    assert cam_hashes(tmp_path / "cams", ["sub/b", "a"]) == {"sub/b": hashlib.md5(b"BB").hexdigest(),
                                                              "a": hashlib.md5(b"AAA").hexdigest()}
    with pytest.raises(ValueError, match=r"cams: make_cam's manifest lists no CAM file for 2 ids \(c, sub/d\); "
                                         r"run `dvc repro -s -f make_cam`$"):
        cam_hashes(tmp_path / "cams", ["a", "c", "sub/d"])


def test_workers_start_with_one_thread_each_and_the_environment_is_restored(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert set(_THREAD_ENV) >= {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}
    with _single_threaded_children():
        assert {k: os.environ[k] for k in _THREAD_ENV} == {k: "1" for k in _THREAD_ENV}
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ
    with pytest.raises(KeyError):  # restored on an error too
        with _single_threaded_children():
            raise KeyError("x")
    assert os.environ["OMP_NUM_THREADS"] == "7" and "MKL_NUM_THREADS" not in os.environ


# ---- generate_pseudo_labels and the stage ------------------------------------------------------------------------
@pytest.fixture()
def synthetic(tmp_path):
    """(params, workspace) of a prepared synthetic VOC root, with CAMs that are each mask's one-hot maps."""
    ids = [f"syn_{i:04d}" for i in range(3)]
    write_voc_root(tmp_path / "voc", train=len(ids), val=1, seed=0, size=32, num_classes=3)
    params = parse_params({"data": {"root": str(tmp_path / "voc"), "workers": 0},
                           "pseudo_labels": {"mode": "none", "workers": 1, "threshold": 0.5}})
    ws = Workspace(tmp_path / "project")
    prepare.run(params, ws)
    data = ws.dataset(params)
    assert data.ids("train") == ids
    folder = ResumableFolder(ws.cams, {"cams": 1}, ".npz")
    folder.open()
    for i in ids:
        cams, keys = cams_from_mask(data.read_mask(i), downscale=1, blur_sigma=0, shift=(0, 0))
        folder.write(i, cam_bytes(cams, keys))
    folder.finish(ids)
    return params, ws


def test_generate_checks_its_arguments(synthetic, tmp_path):
    params, ws = synthetic
    data = ws.dataset(params)
    with pytest.raises(ValueError, match=r"^mode must be one of \('irn', 'prob', 'none'\), got 'best'$"):
        generate_pseudo_labels(data, [], ws.cams, tmp_path / "o", mode="best")
    with pytest.raises(ValueError, match=r"^workers must be >= 0 \(0: one per core\), got -1$"):
        generate_pseudo_labels(data, [], ws.cams, tmp_path / "o", workers=-1)
    with pytest.raises(FileNotFoundError, match=r"cams: no CAM file for 2 ids: x, y$"):
        generate_pseudo_labels(data, ["syn_0000", "x", "y"], ws.cams, tmp_path / "o")


def test_generate_into_a_plain_folder_rewrites_and_records_nothing(synthetic, tmp_path):
    params, ws = synthetic
    data = ws.dataset(params)
    ids = data.ids("train")
    assert generate_pseudo_labels(data, ids, ws.cams, tmp_path / "plain", workers=1, mode="none", threshold=0.5) == 3
    for i in ids:  # exact one-hot CAMs: the labels are the mask (its ignored pixels background)
        mask = data.read_mask(i)
        np.testing.assert_array_equal(read_mask(tmp_path / "plain" / f"{i}.png"), np.where(mask == 255, 0, mask))
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [f"{i}.png" for i in ids]


def test_generate_into_a_resumable_folder_writes_only_what_it_lacks_and_records_the_sources(synthetic, tmp_path):
    params, ws = synthetic
    data = ws.dataset(params)
    ids = data.ids("train")
    sources = cam_hashes(ws.cams, ids)
    out = ResumableFolder(tmp_path / "labels", {"k": 1}, ".png")
    out.open()
    assert generate_pseudo_labels(data, ids[:1], ws.cams, out, mode="none", cam_md5=sources) == 1
    # workers 0: one per core, at most one per image left (2)
    assert generate_pseudo_labels(data, ids, ws.cams, out, workers=0, mode="none", cam_md5=sources) == 2
    assert generate_pseudo_labels(data, ids, ws.cams, out, mode="none", cam_md5=sources) == 0
    out.finish(ids)
    manifest = json.loads((tmp_path / "labels" / ".manifest.json").read_text())["files"]
    for i in ids:
        data_bytes = (tmp_path / "labels" / f"{i}.png").read_bytes()
        assert manifest[f"{i}.png"] == [len(data_bytes), hashlib.md5(data_bytes).hexdigest(), sources[i]]


def test_the_stage_passes_every_knob_and_scores_the_labels(synthetic, monkeypatch):
    params, ws = synthetic
    knobs = {"mode": "none", "workers": 1, "fg_threshold": 0.4, "bg_threshold": 0.1, "threshold": 0.5,
             "gt_prob": 0.6, "prob_alpha": 2.0, "confidence": 0.8, "crf": {"iterations": 2, "gaussian_sxy": 4}}
    params = parse_params({"data": params.data.model_dump(), "pseudo_labels": knobs})
    seen = {}
    real = pseudo_labels.generate_pseudo_labels

    def spy(data, ids, cam_dir, out, **kw):
        seen.update(kw, ids=list(ids), cam_dir=cam_dir, out=out)
        return real(data, ids, cam_dir, out, **kw)

    monkeypatch.setattr(pseudo_labels, "generate_pseudo_labels", spy)
    pseudo_labels.run(params, ws)
    ids = ws.dataset(params).ids("train")
    assert seen.pop("cam_md5") == {i: hashlib.md5((ws.cams / f"{i}.npz").read_bytes()).hexdigest() for i in ids}
    assert isinstance(seen["out"], ResumableFolder) and seen.pop("out").folder == ws.pseudo_labels
    assert seen.pop("crf") == CRFParams(iterations=2, gaussian_sxy=4)
    assert seen == {"ids": ids, "cam_dir": ws.cams, "workers": 1, "mode": "none", "fg_threshold": 0.4,
                    "bg_threshold": 0.1, "threshold": 0.5, "gt_prob": 0.6, "prob_alpha": 2.0, "confidence": 0.8}
    # the labels are the masks, every one of their pixels committed: perfect scores on the scored images
    scores = json.loads((ws.metrics / "pseudo_labels.json").read_text())
    assert scores["miou"] == pytest.approx(100.0) and scores["ignore_ratio"] == 0.0 and scores["n_images"] == 3
    assert scores["note"] == "3 of the 3 train images have a mask and are scored"
    manifest = json.loads((ws.pseudo_labels / ".manifest.json").read_text())["files"]
    assert sorted(manifest) == [f"{i}.png" for i in ids]
    stamp = json.loads((ws.pseudo_labels / ".stamp.json").read_text())
    assert stamp["config"]["pseudo_labels"]["threshold"] == 0.5 and "workers" not in stamp["config"]["pseudo_labels"]
    assert list(stamp["inputs"]) == ["dataset.json"]


def test_the_stage_with_other_knobs_starts_afresh_and_with_the_same_keeps_its_labels(synthetic, monkeypatch):
    params, ws = synthetic
    pseudo_labels.run(params, ws)
    labelled = []
    real = pseudo_labels._label_one
    monkeypatch.setattr(pseudo_labels, "_label_one", lambda task: labelled.append(task[1]) or real(task))
    pseudo_labels.run(params, ws)
    assert labelled == []
    # the number of workers is not in the stamp: the same labels
    pseudo_labels.run(parse_params({"data": params.data.model_dump(), "pseudo_labels": {
        "mode": "none", "workers": 2, "threshold": 0.5}}), ws)
    assert labelled == []
    pseudo_labels.run(parse_params({"data": params.data.model_dump(), "pseudo_labels": {
        "mode": "none", "workers": 1, "threshold": 0.6}}), ws)
    assert sorted(labelled) == ws.dataset(params).ids("train")


# ---- CAMs made from a mask -----------------------------------------------------------------------------------------
def test_cams_from_mask_without_degradation_are_the_one_hot_maps():
    mask = np.array([[0, 3, 3, 255], [7, 7, 0, 0]], np.uint8)
    cams, keys = cams_from_mask(mask, downscale=1, blur_sigma=0, shift=(0, 0))
    assert keys.dtype == np.int64 and keys.tolist() == [2, 6]  # labels 3 and 7, 0-based; 0 and 255 are not classes
    assert cams.dtype == np.float16 and cams.shape == (2, 2, 4)
    np.testing.assert_array_equal(cams[0], mask == 3)
    np.testing.assert_array_equal(cams[1], mask == 7)
    assert cams_from_mask(mask, downscale=1, blur_sigma=0, shift=(0, 0), dtype=np.float32)[0].dtype == np.float32


def test_cams_from_mask_shift_blur_and_downscale():
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 1
    cams, _ = cams_from_mask(mask, downscale=1, blur_sigma=0, shift=(2, -1), dtype=np.float32)
    np.testing.assert_array_equal(cams[0], np.roll(mask == 1, (2, -1), (0, 1)))  # rows down 2, columns left 1
    blurred, _ = cams_from_mask(mask, downscale=1, blur_sigma=2.0, shift=(0, 0), dtype=np.float32)
    assert blurred.max() == 1.0 and 0 < blurred[0, 2, 2] < 0.5 and blurred[0, 0, 15] < 0.01  # max-normalised
    small, _ = cams_from_mask(mask, downscale=4, blur_sigma=0, shift=(0, 0), dtype=np.float32)
    # averaged down to 4 x 4 (the object one cell), upsampled bilinearly: peak 1 inside, spread past the edge
    assert small.shape == (1, 16, 16) and small.max() == 1.0 and 0 < small[0, 3, 5] < 1 and small[0, 15, 15] == 0
    assert not np.array_equal(small[0] > 0, mask == 1)


def test_cams_from_mask_downscale_two_is_block_means_upsampled_bilinearly():
    import torch
    import torch.nn.functional as F

    # a non-square mask with an object on the border: downscale 2 = 2 x 2 block means, then bilinear back to full
    # size with edges repeated (torch's area and bilinear, align_corners False, as a plain reference)
    mask = np.zeros((6, 8), np.uint8)
    mask[0:3, 0:5] = 2
    cams, keys = cams_from_mask(mask, downscale=2, blur_sigma=0, shift=(0, 0), dtype=np.float32)
    onehot = torch.from_numpy((mask == 2).astype(np.float32))[None, None]
    small = F.avg_pool2d(onehot, 2)
    expected = F.interpolate(small, size=mask.shape, mode="bilinear", align_corners=False)[0, 0].numpy()
    assert keys.tolist() == [1]
    np.testing.assert_allclose(cams[0], expected / expected.max(), atol=1e-6)


def test_cams_from_mask_defaults_blur_and_shift_with_edges_repeated():
    mask = np.zeros((40, 48), np.uint8)
    mask[8:24, 16:40] = 1
    default, _ = cams_from_mask(mask)
    np.testing.assert_array_equal(default, cams_from_mask(mask, downscale=8, blur_sigma=4.0, shift=(3, 3))[0])
    assert not np.array_equal(default, cams_from_mask(mask, downscale=4, blur_sigma=4.0, shift=(3, 3))[0])
    assert not np.array_equal(default, cams_from_mask(mask, downscale=8, blur_sigma=3.0, shift=(3, 3))[0])
    # a blur of one pixel reaches one pixel past the object
    blurred, _ = cams_from_mask(mask, downscale=1, blur_sigma=1.0, shift=(0, 0), dtype=np.float32)
    assert blurred[0, 7, 20] > 0.1 and blurred[0, 4, 20] < 1e-3
    # shifted down 2 rows from the top edge: the two new rows repeat row 0
    top = np.zeros((6, 4), np.uint8)
    top[0] = 1
    shifted, _ = cams_from_mask(top, downscale=1, blur_sigma=0, shift=(2, 0), dtype=np.float32)
    np.testing.assert_array_equal(shifted[0], np.repeat([[1.0], [1.0], [1.0], [0.0], [0.0], [0.0]], 4, 1))


def test_cams_from_mask_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"^mask must be \(H, W\), got shape \(2, 2, 1\)$"):
        cams_from_mask(np.zeros((2, 2, 1), np.uint8))
    with pytest.raises(ValueError, match=r"^downscale must be >= 1, got 0$"):
        cams_from_mask(np.zeros((2, 2), np.uint8), downscale=0)
    cams, keys = cams_from_mask(np.zeros((4, 4), np.uint8))
    assert cams.shape == (0, 4, 4) and keys.tolist() == [] and keys.dtype == np.int64  # make_cam's key format


def test_a_recomputed_cam_recomputes_its_label_and_no_other(synthetic, monkeypatch):
    params, ws = synthetic
    pseudo_labels.run(params, ws)
    ids = ws.dataset(params).ids("train")
    # make_cam rewrites one CAM file with other content (its manifest updated): all-zero maps
    stamp = json.loads((ws.cams / ".stamp.json").read_text())
    stamp.pop("format")
    cams = ResumableFolder(ws.cams, stamp, ".npz")
    assert cams.open() == 3
    (ws.cams / f"{ids[1]}.npz").unlink()
    cams.write(ids[1], cam_bytes(np.zeros((1, 32, 32), np.float16), np.array([0])))
    cams.finish(ids)
    labelled = []
    real = pseudo_labels._label_one
    monkeypatch.setattr(pseudo_labels, "_label_one", lambda task: labelled.append(task[1]) or real(task))
    pseudo_labels.run(params, ws)
    assert labelled == [ids[1]]
    assert not read_mask(ws.pseudo_labels / f"{ids[1]}.png").any()  # all-zero CAMs: all background


def test_the_stage_warns_only_when_nothing_could_be_scored(synthetic, caplog, monkeypatch):
    import logging

    params, ws = synthetic
    with caplog.at_level(logging.WARNING, logger="textwsss.pipeline.pseudo_labels"):
        pseudo_labels.run(params, ws)
    assert not [r for r in caplog.records if "not scored" in r.getMessage()]
    # no train image with a mask (the tags layout without masks/): scored on no ids
    real = pseudo_labels.score_pseudo_labels
    monkeypatch.setattr(pseudo_labels, "score_pseudo_labels", lambda data, ids, folder: real(data, [], folder))
    with caplog.at_level(logging.WARNING, logger="textwsss.pipeline.pseudo_labels"):
        pseudo_labels.run(params, ws)
    assert [r for r in caplog.records if "not scored" in r.getMessage()]
    assert json.loads((ws.metrics / "pseudo_labels.json").read_text())["miou"] is None


def test_cam_hashes_names_the_first_ten_ids_without_a_cam(tmp_path):
    cams = ResumableFolder(tmp_path / "cams", {}, ".npz")
    cams.open()
    cams.finish([])
    ids = [f"i{n:02d}" for n in range(11)]
    with pytest.raises(ValueError) as err:
        cam_hashes(tmp_path / "cams", ids)
    assert str(err.value) == (f"{tmp_path / 'cams'}: make_cam's manifest lists no CAM file for 11 ids "
                              f"({', '.join(ids[:10])}); run `dvc repro -s -f make_cam`")


def test_scoring_names_the_first_twenty_missing_labels_and_scores_no_ids_as_none(synthetic, tmp_path):
    from textwsss.pipeline.pseudo_labels import score_pseudo_labels

    params, ws = synthetic
    data = ws.dataset(params)
    ids = [f"m{n:02d}" for n in range(21)]
    with pytest.raises(FileNotFoundError) as err:
        score_pseudo_labels(data, ids, tmp_path / "labels")
    assert str(err.value) == f"{tmp_path / 'labels'}: no pseudo-label PNG for 21 ids: {', '.join(ids[:20])}"
    assert score_pseudo_labels(data, [], tmp_path / "labels") == {
        "miou": None, "ignore_ratio": None, "miou_all_pixels": None, "miou_irn_convention": None, "per_class": {},
        "pixel_acc": None, "absent": [], "n_images": 0}


def test_the_functions_defaults_are_the_params_defaults():
    # a caller that leaves a knob out (a benchmark, a test, the CLI) gets what params.yaml's defaults give
    import inspect

    from textwsss.params import PseudoLabelParams

    defaults = PseudoLabelParams()
    for function in (generate_pseudo_labels, pseudo_label):
        signature = inspect.signature(function).parameters
        for knob in ("mode", "fg_threshold", "bg_threshold", "threshold", "gt_prob", "prob_alpha", "confidence",
                     "crf"):
            assert signature[knob].default == getattr(defaults, knob), (function.__name__, knob)
    assert inspect.signature(generate_pseudo_labels).parameters["workers"].default == defaults.workers == 0


def test_scoring_by_hand_pixel_accuracy_absent_classes_and_a_mask_with_nothing_to_score(tmp_path):
    from textwsss.data.classes import VOC
    from textwsss.data.prepared import PreparedDataset
    from textwsss.io import save_label_png
    from textwsss.pipeline.pseudo_labels import score_pseudo_labels

    save_label_png(tmp_path / "masks" / "a.png", np.array([[0, 1, 1, 255]], np.uint8))
    save_label_png(tmp_path / "labels" / "a.png", np.array([[0, 1, 0, 3]], np.uint8))
    save_label_png(tmp_path / "masks" / "b.png", np.full((1, 4), 255, np.uint8))
    save_label_png(tmp_path / "labels" / "b.png", np.array([[0, 1, 255, 2]], np.uint8))
    save_label_png(tmp_path / "labels" / "c.png", np.zeros((2, 4), np.uint8))
    data = PreparedDataset("voc", tmp_path, tmp_path, VOC, {"train": ["a", "b", "c"]}, {},
                           {"a": "masks/a.png", "b": "masks/b.png", "c": "masks/a.png"}, {})
    scores = score_pseudo_labels(data, ["a"], tmp_path / "labels")
    # 3 scored pixels, 2 right; background tp 1 union 2, aeroplane tp 1 union 2; every other class absent
    assert scores["pixel_acc"] == pytest.approx(200 / 3, abs=1e-3)
    assert scores["miou"] == pytest.approx(50.0) and scores["miou_all_pixels"] == pytest.approx(50.0)
    assert scores["absent"] == [n for n in VOC.label_names if n not in ("background", "aeroplane")]
    # a mask that is all 255: nothing scored, every score defined (no NaN)
    nothing = score_pseudo_labels(data, ["b"], tmp_path / "labels")
    assert nothing["miou_all_pixels"] == 0.0 and nothing["ignore_ratio"] == 0.0 and nothing["n_images"] == 1
    with pytest.raises(ValueError) as err:
        score_pseudo_labels(data, ["c"], tmp_path / "labels")
    assert str(err.value) == "c: pseudo-label size (2, 4) differs from ground truth (1, 4)"


@pytest.mark.parametrize("mode", ["irn", "prob", "none"])
def test_generate_passes_every_knob_to_each_image(synthetic, tmp_path, mode):
    # graded CAMs and knobs that all differ from their defaults: each label file must be what pseudo_label
    # (checked by hand above) makes of its image with the same knobs
    from textwsss.data.images import read_image

    params, ws = synthetic
    data = ws.dataset(params)
    ids = data.ids("train")
    for i in ids:
        cams, keys = cams_from_mask(data.read_mask(i), downscale=4, blur_sigma=2, shift=(1, 1))
        save_npz(tmp_path / "cams" / f"{i}.npz", cams=cams, keys=keys)
    knobs = dict(fg_threshold=0.45, bg_threshold=0.2, threshold=0.3, prob_alpha=2.0, confidence=0.7, gt_prob=0.6,
                 crf=CRFParams(iterations=2, bilateral_srgb=9))
    assert generate_pseudo_labels(data, ids, tmp_path / "cams", tmp_path / "out", workers=1, mode=mode, **knobs) == 3
    for i in ids:
        with np.load(tmp_path / "cams" / f"{i}.npz") as f:
            expected = pseudo_label(read_image(data.image_path(i)), f["cams"], f["keys"], mode, **knobs)
        np.testing.assert_array_equal(read_mask(tmp_path / "out" / f"{i}.png"), expected)


def test_generate_refuses_a_cam_file_changed_since_make_cam_recorded_it(synthetic, tmp_path):
    params, ws = synthetic
    data = ws.dataset(params)
    ids = data.ids("train")
    sources = cam_hashes(ws.cams, ids)
    damaged = ws.cams / f"{ids[1]}.npz"
    cams, keys = cams_from_mask(data.read_mask(ids[1]), downscale=1, blur_sigma=0, shift=(1, 1))
    damaged.write_bytes(cam_bytes(cams, keys))  # a valid CAM file, but not the one make_cam wrote
    with pytest.raises(ValueError, match=rf"{ids[1]}\.npz: its content differs from what make_cam recorded"):
        generate_pseudo_labels(data, ids, ws.cams, tmp_path / "out", workers=1, mode="none", cam_md5=sources)
    assert not (tmp_path / "out" / f"{ids[1]}.png").exists()


def test_generate_names_the_first_twenty_ids_without_a_cam(synthetic, tmp_path):
    params, ws = synthetic
    ids = [f"x{n:02d}" for n in range(21)]
    with pytest.raises(FileNotFoundError) as err:
        generate_pseudo_labels(ws.dataset(params), ids, tmp_path / "none", tmp_path / "out")
    assert str(err.value) == f"{tmp_path / 'none'}: no CAM file for 21 ids: {', '.join(ids[:20])}"


def test_generate_checks_the_cam_keys_against_the_dataset_classes(synthetic, tmp_path):
    params, ws = synthetic
    data = ws.dataset(params)
    image_id = data.ids("train")[0]
    assert data.classes.num_classes == 20  # the voc layout: VOC's classes, of which the scenes use three
    save_npz(tmp_path / "cams" / f"{image_id}.npz", cams=np.ones((1, 32, 32), np.float16), keys=np.array([20]))
    with pytest.raises(ValueError, match=rf"^{image_id}: keys must be class indices 0\.\.19, got \[20\]$"):
        generate_pseudo_labels(data, [image_id], tmp_path / "cams", tmp_path / "out", workers=1, mode="none")


def test_a_cam_equal_to_the_background_score_does_not_beat_it():
    # float32 CAMs against a float32 background: float32(0.15) ties 0.15 and the background (first) wins;
    # compared in float64 the CAM would come out 6e-9 higher and take the pixel
    cams = np.full((1, 1, 4), 0.15, np.float32)
    np.testing.assert_array_equal(pseudo_label(GREY, cams, np.array([0]), "none", threshold=0.15), [[0, 0, 0, 0]])


def test_an_ignored_pixel_counts_as_background_in_the_irn_convention(tmp_path):
    from textwsss.data.classes import VOC
    from textwsss.data.prepared import PreparedDataset
    from textwsss.io import save_label_png
    from textwsss.pipeline.pseudo_labels import score_pseudo_labels

    save_label_png(tmp_path / "masks" / "a.png", np.array([[0, 0]], np.uint8))
    save_label_png(tmp_path / "labels" / "a.png", np.array([[255, 0]], np.uint8))
    data = PreparedDataset("voc", tmp_path, tmp_path, VOC, {"train": ["a"]}, {}, {"a": "masks/a.png"}, {})
    # as background: both pixels right, background the only class present -> 100 (as class 1 it would be 25)
    assert score_pseudo_labels(data, ["a"], tmp_path / "labels")["miou_irn_convention"] == pytest.approx(100.0)


@pytest.mark.parametrize("mode", ["irn", "prob", "none"])
def test_generate_without_knobs_uses_the_params_defaults(synthetic, tmp_path, mode):
    from textwsss.data.images import read_image
    from textwsss.params import PseudoLabelParams

    params, ws = synthetic
    data = ws.dataset(params)
    ids = data.ids("train")[:2]
    for i in ids:
        cams, keys = cams_from_mask(data.read_mask(i), downscale=4, blur_sigma=2, shift=(1, 1))
        save_npz(tmp_path / "cams" / f"{i}.npz", cams=cams, keys=keys)
    generate_pseudo_labels(data, ids, tmp_path / "cams", tmp_path / "out", workers=1, mode=mode)
    p = PseudoLabelParams()
    knobs = dict(fg_threshold=p.fg_threshold, bg_threshold=p.bg_threshold, threshold=p.threshold,
                 prob_alpha=p.prob_alpha, confidence=p.confidence, gt_prob=p.gt_prob, crf=p.crf)
    for i in ids:
        with np.load(tmp_path / "cams" / f"{i}.npz") as f:
            expected = pseudo_label(read_image(data.image_path(i)), f["cams"], f["keys"], mode, **knobs)
        np.testing.assert_array_equal(read_mask(tmp_path / "out" / f"{i}.png"), expected)
