"""kill -9 during a training stage (the CAM network, the relation network, the segmentation network), then
`dvc repro`: training resumes from its last checkpoint and ends with the same weights and logged metrics as an
uninterrupted run."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

from pipeline_fixture import env, make_project, run, stages_run
from textwsss.training.loop import previous_checkpoint

SETTINGS = {"cam": {"init": "imagenet"}, "train_cam": {"epochs": 3, "loss": "bce"},
            "train_irn": {"epochs": 8}, "train_seg": {"epochs": 3}}  # the relation network's epochs: a split second


def _final(project, stage):
    state = torch.load(project / "data" / stage / "model.pt", weights_only=False)["state_dict"]
    metrics = json.loads((project / "reports" / stage / "metrics.json").read_text())
    return state, metrics


# `before`: every stage upstream of `stage`
@pytest.mark.parametrize("stage, before", [("train_cam", "train_cam_baseline"), ("train_irn", "pseudo_labels"),
                                           ("train_seg", "random_walk")])
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path, stage, before):
    # the stages upstream run once: the killed project is a copy of the reference's repository (git, DVC cache,
    # outputs; the same data root) taken before `stage` ran
    reference = make_project(tmp_path / "ref", SETTINGS)
    run(reference, "dvc", "repro", before)
    project = tmp_path / "killed"
    shutil.copytree(reference, project, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
    # prepare re-checks the data on every repro (always changed); nothing else upstream runs again
    assert [s for s in stages_run(run(reference, "dvc", "repro", stage).stdout) if s != "prepare"] == [stage]

    proc = subprocess.Popen(["dvc", "repro", stage], cwd=project, env=env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = project / "data" / stage / "checkpoint.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if checkpoint.exists() and torch.load(checkpoint, weights_only=False)["epoch"] >= 0:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed; make it longer"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # a kill inside save_checkpoint, after it set the last checkpoint aside and before the new one is in place,
    # leaves only the one before: training resumes from it
    kept = checkpoint if checkpoint.exists() else previous_checkpoint(checkpoint)
    epoch_at_kill = torch.load(kept, weights_only=False)["epoch"]
    assert epoch_at_kill < SETTINGS[stage]["epochs"] - 1  # killed before its last epoch
    assert not (project / "data" / stage / "model.pt").exists()  # no partial final output

    result = run(project, "dvc", "repro", stage)
    assert stage in stages_run(result.stdout)
    assert "resuming" in result.stdout + result.stderr
    state, metrics = _final(project, stage)
    ref_state, ref_metrics = _final(reference, stage)
    for key in ref_state:
        assert torch.equal(state[key], ref_state[key]), key
    assert metrics["train"] == ref_metrics["train"]
    assert "up to date" in run(project, "dvc", "status", stage).stdout
