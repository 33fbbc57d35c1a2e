"""Sharing the DVC cache through a remote: push on one machine, clone + pull on another, nothing reruns (but
the data check of prepare, which finds the same data); and a file damaged in the remote is never used."""
import hashlib

from pipeline_fixture import make_project, run, stages_run


def _in_remote(remote, path):
    """The remote's copy of a file (DVC 3 keeps each file by its md5 under files/md5/)."""
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    return remote / "files" / "md5" / md5[:2] / md5[2:]


def test_push_clone_pull_runs_nothing_and_a_damaged_file_is_never_used(tmp_path):
    project = make_project(tmp_path / "a", {"train_cam": {"loss": "bce"}})
    assert stages_run(run(project, "dvc", "repro", "make_cam").stdout) == \
        ["prepare", "train_cam_baseline", "train_cam", "make_cam"]
    remote = tmp_path / "remote"
    run(project, "dvc", "remote", "add", "-d", "store", str(remote))
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "run make_cam")
    run(project, "dvc", "push")

    clone = tmp_path / "b"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "data" / "train_cam" / "model.pt").exists()
    run(clone, "dvc", "pull", "prepare", "train_cam_baseline", "train_cam", "make_cam")
    assert (clone / "data" / "train_cam" / "model.pt").read_bytes() == \
        (project / "data" / "train_cam" / "model.pt").read_bytes()
    assert stages_run(run(clone, "dvc", "repro", "make_cam").stdout) == ["prepare"]
    assert "up to date" in run(clone, "dvc", "status", "make_cam").stdout

    # One CAM file cut short in the remote (a failed upload, a damaged disk). DVC does not check what it pulls
    # (the remote's `verify` is off by default) and calls make_cam up to date; pseudo_labels, which reads the
    # file, checks it against make_cam's manifest and stops with its name instead of labelling from it.
    cam = sorted((project / "data" / "cams").glob("*.npz"))[2]
    stored = _in_remote(remote, cam)
    stored.chmod(0o644)
    stored.write_bytes(stored.read_bytes()[:100])
    damaged = tmp_path / "c"
    run(tmp_path, "git", "clone", "-q", str(project), str(damaged))
    run(damaged, "dvc", "pull", "prepare", "train_cam_baseline", "train_cam", "make_cam", check=False)
    assert (damaged / "data" / "cams" / cam.name).stat().st_size == 100
    failed = run(damaged, "dvc", "repro", "pseudo_labels", check=False)
    assert failed.returncode != 0
    assert f"{cam.name}: its content differs from what make_cam recorded" in failed.stdout + failed.stderr
    assert not (damaged / "data" / "pseudo_labels" / f"{cam.stem}.png").exists()
    # the fix the message names: make_cam alone, which finds that one file, recomputes it and keeps the rest
    fixed = run(damaged, "dvc", "repro", "-s", "-f", "make_cam")
    assert f"{cam.name}: size 100 bytes" in fixed.stdout + fixed.stderr
    assert "(1 computed by this process now)" in fixed.stdout + fixed.stderr
    assert (damaged / "data" / "cams" / cam.name).read_bytes() == cam.read_bytes()
    assert "pseudo_labels" in stages_run(run(damaged, "dvc", "repro", "pseudo_labels").stdout)
