"""The real `dvc` command on the whole DAG (synthetic data, tiny settings): caching and precise reruns."""
import json

import pytest

from pipeline_fixture import make_project, run, set_param, stages_run

ALL = ["prepare", "train_cam", "make_cam", "eval_cam", "pseudo_labels", "train_seg", "eval_seg", "zeroshot", "tas"]


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


def test_nothing_changed_runs_nothing_and_status_is_clean(project):
    result = run(project, "dvc", "repro")
    assert stages_run(result.stdout) == []
    status = run(project, "dvc", "status")
    assert "up to date" in status.stdout


def test_clims_gamma_reruns_train_cam_and_what_follows(project):
    set_param(project, "clims.gamma", 3.0)
    ran = stages_run(run(project, "dvc", "repro").stdout)
    assert "prepare" not in ran and "zeroshot" not in ran
    assert ran[0] == "train_cam"
    assert {"train_cam", "make_cam", "eval_cam", "pseudo_labels"} <= set(ran)


def test_crf_iterations_reruns_only_pseudo_labels_and_what_follows(project):
    set_param(project, "pseudo_labels.crf.iterations", 3)
    ran = stages_run(run(project, "dvc", "repro").stdout)
    assert ran[0] == "pseudo_labels"
    assert not {"prepare", "train_cam", "make_cam", "eval_cam", "zeroshot"} & set(ran)
    assert "up to date" in run(project, "dvc", "status").stdout


def test_bad_params_fail_through_dvc_with_the_message(project):
    set_param(project, "train_cam.lr", -1.0)
    result = run(project, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "train_cam.lr" in result.stdout + result.stderr
    set_param(project, "train_cam.lr", 0.01)
