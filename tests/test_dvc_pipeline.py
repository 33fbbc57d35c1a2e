"""The real `dvc` command on the whole DAG (synthetic data, tiny settings): caching and precise reruns."""
import json

import numpy as np
import pytest

from pipeline_fixture import make_project, run, set_param, stages_run

ALL = ["prepare", "train_cam_baseline", "train_cam", "make_cam", "eval_cam", "pseudo_labels", "train_irn", "random_walk",
       "train_seg", "eval_seg", "zeroshot", "tas"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    # cbs_threshold 0: every pair counts, so a change of gamma really changes the trained weights
    project = make_project(tmp_path_factory.mktemp("dvc"), {"clims": {"cbs_threshold": 0.0}})
    result = run(project, "dvc", "repro")
    assert sorted(stages_run(result.stdout)) == sorted(ALL), result.stdout
    return project


def test_full_dag_writes_every_metric_file(project):
    for name, keys in {"cam": {"miou", "threshold", "per_class"}, "pseudo_labels": {"miou", "ignore_ratio", "per_class"},
                       "seg": {"miou", "pixel_acc", "per_class"}, "zeroshot": {"miou", "per_class"},
                       "tas": {"miou", "oiou", "n"}}.items():
        metrics = json.loads((project / "reports" / "metrics" / f"{name}.json").read_text())
        assert keys <= set(metrics), name
        assert 0 <= metrics["miou"] <= 100


def test_nothing_changed_reruns_only_the_data_check(project):
    # prepare re-checks the data on every repro (it lies outside the repository); unchanged data gives the same
    # dataset.json, so nothing after it runs
    before = (project / "data" / "prepared" / "dataset.json").read_bytes()
    result = run(project, "dvc", "repro")
    assert stages_run(result.stdout) == ["prepare"]
                       "random_walk": {"miou", "miou_all_pixels", "per_class"},
    assert (project / "data" / "prepared" / "dataset.json").read_bytes() == before
    status = run(project, "dvc", "status").stdout
    assert "always changed" in status and "changed deps" not in status and "changed outs" not in status


def test_clims_gamma_reruns_train_cam_and_what_follows(project):
    set_param(project, "clims.gamma", 3.0)
    ran = [s for s in stages_run(run(project, "dvc", "repro").stdout) if s != "prepare"]
    assert "zeroshot" not in ran
    assert ran[0] == "train_cam"
    assert {"train_cam", "make_cam", "eval_cam", "pseudo_labels"} <= set(ran)


def test_crf_iterations_reruns_only_pseudo_labels_and_what_follows(project):
    set_param(project, "pseudo_labels.crf.iterations", 3)
    ran = [s for s in stages_run(run(project, "dvc", "repro").stdout) if s != "prepare"]
    assert ran[0] == "pseudo_labels"
    assert not {"train_cam", "make_cam", "eval_cam", "zeroshot"} & set(ran)
    assert "changed" not in run(project, "dvc", "status").stdout.replace("always changed", "")


def test_bad_params_fail_through_dvc_with_the_message(project):
    set_param(project, "train_cam.lr", -1.0)
    result = run(project, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "train_cam.lr" in result.stdout + result.stderr
    set_param(project, "train_cam.lr", 0.01)


def test_changed_data_reruns_what_depends_on_it(project, tmp_path):
    from PIL import Image

    mask_file = project.parent / "voc" / "SegmentationClass" / "syn_0010.png"  # a val mask
    with Image.open(mask_file) as im:
        palette, mask = im.getpalette(), np.array(im)
    mask[0, 0] = 0 if mask[0, 0] else 1
    edited = Image.fromarray(mask, mode="P")
    edited.putpalette(palette)
    edited.save(mask_file)
    ran = stages_run(run(project, "dvc", "repro").stdout)
    assert ran[0] == "prepare" and {"eval_seg", "zeroshot", "tas"} <= set(ran)


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
