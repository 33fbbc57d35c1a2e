"""The real `dvc` command on the whole DAG (synthetic data, tiny settings): caching and precise reruns."""
import json

import numpy as np
import pytest

from dag_scores import LEARNING, best_constant_miou, masks, md5s, plain_miou, predicted_miou, read_png, split_ids
from pipeline_fixture import make_project, run, set_param, stages_run

ALL = ["prepare", "train_cam_baseline", "train_cam", "make_cam", "eval_cam", "pseudo_labels", "train_irn", "random_walk",
       "train_seg", "eval_seg", "zeroshot", "tas"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    # cbs_threshold 0: every pair counts, so a change of gamma really changes the trained weights
    # LEARNING: enough training that the scores can be held to a floor (the segmentation network on the train
    # masks, seg.labels: gt; what it learns from pseudo-labels, test_dvc_resume's train_seg and test_stage_options)
    project = make_project(tmp_path_factory.mktemp("dvc"), {**LEARNING, "clims": {"cbs_threshold": 0.0}})
    result = run(project, "dvc", "repro")
    assert sorted(stages_run(result.stdout)) == sorted(ALL), result.stdout
    return project


def _metrics(project, name: str) -> dict:
    return json.loads((project / "reports" / "metrics" / f"{name}.json").read_text())


def test_plain_scores_of_a_hand_example():
    pred, gt = np.array([[0, 1], [1, 1]]), np.array([[0, 0], [1, 255]])
    # 3 scored pixels; label 0: 1 shared of 2 in either, label 1: 1 of 2
    assert plain_miou([(pred, gt)]) == pytest.approx(50.0)
    # all 0: label 0 2/3, label 1 0/1; all 1: label 0 0/2, label 1 1/3
    assert best_constant_miou([gt]) == pytest.approx(100 / 3)


def test_full_dag_writes_every_metric_file(project):
    for name, keys in {"cam": {"miou", "threshold", "per_class"}, "pseudo_labels": {"miou", "ignore_ratio", "per_class"},
                       "random_walk": {"miou", "miou_all_pixels", "per_class"},
                       "seg": {"miou", "pixel_acc", "per_class"}, "zeroshot": {"miou", "per_class"},
                       "tas": {"miou", "oiou", "n"}}.items():
        assert keys <= set(_metrics(project, name)), name
    for name in ("zeroshot", "tas"):  # no per-pixel output to recompute them from (their own tests score them)
        assert 0 <= _metrics(project, name)["miou"] <= 100


def _cam_labels(npz, threshold: float) -> np.ndarray:
    """The documented rule (eval_cam): argmax over [threshold, CAM of each present class], class k -> label k + 1;
    a tie goes to the background (the first)."""
    with np.load(npz) as f:
        cams, keys = f["cams"].astype(np.float32), f["keys"]
    stacked = np.concatenate([np.full((1, *cams.shape[1:]), threshold, np.float32), cams])
    return np.array([0, *(int(k) + 1 for k in keys)])[stacked.argmax(0)]


def test_cam_and_pseudo_label_scores_are_those_of_their_files_and_beat_a_constant(project):
    voc = project.parent / "voc"
    ids = split_ids(voc, "train")
    gts = masks(voc, ids)
    floor = best_constant_miou(gts)
    cam = _metrics(project, "cam")
    cams = [_cam_labels(project / "data" / "cams" / f"{i}.npz", cam["threshold"]) for i in ids]
    assert cam["n_images"] == len(ids)
    assert cam["miou"] == pytest.approx(plain_miou(zip(cams, gts)), abs=1e-6)
    labels = [read_png(project / "data" / "pseudo_labels" / f"{i}.png") for i in ids]
    assert _metrics(project, "pseudo_labels")["miou"] == pytest.approx(plain_miou(zip(labels, gts)), abs=1e-6)
    assert cam["miou"] > floor and _metrics(project, "pseudo_labels")["miou"] > floor, floor


def test_seg_score_is_that_of_the_model_written_and_beats_a_constant(project, tmp_path):
    seg = _metrics(project, "seg")
    gated, floor = predicted_miou(project, tmp_path / "gated")
    assert seg["miou"] == pytest.approx(gated, abs=1e-6)
    network, _ = predicted_miou(project, tmp_path / "network", class_gate=False)
    assert seg["ungated"]["miou"] == pytest.approx(network, abs=1e-6)
    # the floor for the network itself: the offline matcher behind the gate knows ImageNet, not these shapes
    assert network > floor, (network, floor)


def test_nothing_changed_reruns_only_the_data_check(project):
    # prepare re-checks the data on every repro (it lies outside the repository); unchanged data gives the same
    # dataset.json, so nothing after it runs
    before = (project / "data" / "prepared" / "dataset.json").read_bytes()
    result = run(project, "dvc", "repro")
    assert stages_run(result.stdout) == ["prepare"]
    assert (project / "data" / "prepared" / "dataset.json").read_bytes() == before
    status = run(project, "dvc", "status").stdout
    assert "always changed" in status and "changed deps" not in status and "changed outs" not in status


def _stale(project) -> dict[str, set[str]]:
    """{stage: the deps `dvc status` finds changed} (prepare, always changed, left out)."""
    status = json.loads(run(project, "dvc", "status", "--json").stdout or "{}")
    stale = {}
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, dict):
                stale.setdefault(stage, set()).update(change.get("changed deps", {}))
    return stale


# The reruns below run their changed stage and what they must, not the networks downstream (the full repro took
# minutes): `dvc status` then names exactly which stages the change has made stale and through which dep.
def test_crf_iterations_reruns_only_pseudo_labels_and_makes_what_follows_stale(project):
    labels, cams = md5s(project / "data" / "pseudo_labels", "*.png"), md5s(project / "data" / "cams", "*.npz")
    assert _stale(project) == {}
    set_param(project, "pseudo_labels.crf.iterations", 3)
    assert set(_stale(project)) == {"pseudo_labels"}
    ran = [s for s in stages_run(run(project, "dvc", "repro", "pseudo_labels").stdout) if s != "prepare"]
    assert ran == ["pseudo_labels"]
    after = md5s(project / "data" / "pseudo_labels", "*.png")
    assert after.keys() == labels.keys() and len(after) == 8
    assert sum(after[k] != labels[k] for k in after) > 0  # the new iterations are in the labels
    assert md5s(project / "data" / "cams", "*.npz") == cams
    # the two networks that learn from the labels are stale through them; nothing upstream or beside is
    stale = _stale(project)
    assert "data/pseudo_labels" in stale["train_irn"] and "data/pseudo_labels" in stale["train_seg"], stale
    assert not {"prepare", "train_cam", "make_cam", "eval_cam", "pseudo_labels", "zeroshot", "tas"} & set(stale), stale


def test_clims_gamma_reruns_train_cam_and_what_follows(project):
    before = _stale(project)
    set_param(project, "clims.gamma", 3.0)
    assert set(_stale(project)) - set(before) == {"train_cam"}
    ran = [s for s in stages_run(run(project, "dvc", "repro", "pseudo_labels", "eval_cam").stdout) if s != "prepare"]
    # each ran because the one before it wrote other bytes: gamma changed the weights, the CAMs and the labels
    assert ran[0] == "train_cam" and sorted(ran) == ["eval_cam", "make_cam", "pseudo_labels", "train_cam"], ran
    stale = _stale(project)
    assert "data/train_cam/model.pt" in stale["train_seg"] and "data/cams" in stale["random_walk"], stale
    assert not {"train_cam_baseline", "zeroshot", "tas"} & set(stale), stale


def test_bad_params_fail_through_dvc_with_the_message(project):
    params = (project / "params.yaml").read_bytes()
    set_param(project, "train_cam.lr", -1.0)
    result = run(project, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "train_cam.lr" in result.stdout + result.stderr
    (project / "params.yaml").write_bytes(params)


def test_changed_data_makes_what_depends_on_it_stale(project):
    from PIL import Image

    mask_file = project.parent / "voc" / "SegmentationClass" / "syn_0010.png"  # a val mask
    original = mask_file.read_bytes()
    with Image.open(mask_file) as im:
        palette, mask = im.getpalette(), np.array(im)
    mask[0, 0] = 0 if mask[0, 0] else 1
    edited = Image.fromarray(mask, mode="P")
    edited.putpalette(palette)
    edited.save(mask_file)
    before = {stage: deps - {"data/prepared"} for stage, deps in _stale(project).items()}
    assert stages_run(run(project, "dvc", "repro", "prepare").stdout) == ["prepare"]
    stale = _stale(project)
    # the stages that score on the val masks see the new dataset.json
    for stage in ("eval_seg", "zeroshot", "tas"):
        assert "data/prepared" in stale.get(stage, set()), (stage, stale)
    # the mask back: the same dataset.json, and every stage is as stale as before the edit
    mask_file.write_bytes(original)
    run(project, "dvc", "repro", "prepare")
    assert {stage: deps for stage, deps in _stale(project).items() if deps} == {s: d for s, d in before.items() if d}


def test_make_cam_on_two_processes_writes_the_same_files(project):
    import hashlib
    import shutil

    cams = project / "data" / "cams"
    before = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in cams.glob("*.npz")}
    shutil.rmtree(cams)
    set_param(project, "make_cam.nproc_per_node", 2)  # torchrun, 2 CPU processes (gloo), every 2nd batch each
    result = run(project, "dvc", "repro", "make_cam")
    assert "make_cam" in stages_run(result.stdout)
    after = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in cams.glob("*.npz")}
    assert after == before and len(after) == 8
    set_param(project, "make_cam.nproc_per_node", 1)
