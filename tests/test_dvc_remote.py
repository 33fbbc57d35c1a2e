"""Sharing the DVC cache through a remote: push on one machine, clone + pull on another, nothing reruns (but
the data check of prepare, which finds the same data)."""
from pipeline_fixture import make_project, run, stages_run


def test_push_clone_pull_runs_nothing(tmp_path):
    project = make_project(tmp_path / "a", {"train_cam": {"loss": "bce"}})
    assert stages_run(run(project, "dvc", "repro", "train_cam").stdout) == ["prepare", "train_cam_baseline", "train_cam"]
    remote = tmp_path / "remote"
    run(project, "dvc", "remote", "add", "-d", "store", str(remote))
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "run train_cam")
    run(project, "dvc", "push")

    clone = tmp_path / "b"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "data" / "train_cam" / "model.pt").exists()
    run(clone, "dvc", "pull", "prepare", "train_cam_baseline", "train_cam")
    assert (clone / "data" / "train_cam" / "model.pt").read_bytes() == \
        (project / "data" / "train_cam" / "model.pt").read_bytes()
    assert stages_run(run(clone, "dvc", "repro", "train_cam").stdout) == ["prepare"]
    assert "up to date" in run(clone, "dvc", "status", "train_cam").stdout
