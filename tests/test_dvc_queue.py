"""Queued experiments: `dvc exp run --queue` + `dvc queue start -j 2` run in copies of the repository under
.dvc/tmp/exps/, where a data root given relative to the repository must still resolve."""
import json
import time

import pytest
import yaml

from dag_scores import LEARNING, predicted_miou
from pipeline_fixture import make_project, run


def test_queued_experiments_run_with_a_relative_data_root(tmp_path):
    # the repository at tmp/project, its data at tmp/voc: the same relation as ../shared/voc-mini in the real one
    # the segmentation network as LEARNING trains it (on the train masks: a floor with a margin); the CAM
    # stages at the tiny settings, as nothing downstream learns from them here
    project = make_project(tmp_path, {"data": {"root": "../voc"}, "seg": LEARNING["seg"],
                                      "train_seg": LEARNING["train_seg"]})
    run(project, "dvc", "exp", "run", "--queue", "-S", "seed=1")
    run(project, "dvc", "exp", "run", "--queue", "-S", "seed=2")
    run(project, "dvc", "queue", "start", "-j", "2")
    deadline = time.time() + 900
    while time.time() < deadline:
        status = run(project, "dvc", "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(run(project, "dvc", "exp", "show", "--json").stdout)
    experiments = [e for rev in shown for e in (rev.get("experiments") or [])]
    seeds = []
    for exp in experiments:
        rev = exp["revs"][0]
        data = rev["data"]
        seed = data["params"]["params.yaml"]["data"]["seed"]
        seeds.append(seed)
        metrics = data["metrics"]["reports/metrics/seg.json"]["data"]
        # the experiment's outputs into the workspace (from the cache the queue filled), then its model's scores
        # recomputed from predict's PNGs: equal to what the experiment recorded, the network's above a constant
        run(project, "dvc", "exp", "apply", rev["rev"])
        assert yaml.safe_load((project / "params.yaml").read_text())["seed"] == seed
        gated, floor = predicted_miou(project, tmp_path / f"gated-{seed}")
        network, _ = predicted_miou(project, tmp_path / f"network-{seed}", class_gate=False)
        assert metrics["miou"] == pytest.approx(gated, abs=1e-6), seed
        assert metrics["ungated"]["miou"] == pytest.approx(network, abs=1e-6), seed
        assert network > floor, (seed, network, floor)
    assert sorted(seeds) == [1, 2]
