"""Queued experiments: `dvc exp run --queue` + `dvc queue start -j 2` run in copies of the repository under
.dvc/tmp/exps/, where a data root given relative to the repository must still resolve."""
import json
import time

from pipeline_fixture import make_project, run


def test_queued_experiments_run_with_a_relative_data_root(tmp_path):
    # the repository at tmp/project, its data at tmp/voc: the same relation as ../shared/voc-mini in the real one
    project = make_project(tmp_path, {"data": {"root": "../voc"}, "train_cam": {"loss": "bce"},
                                      "cam": {"init": "imagenet"}})
    run(project, "dvc", "exp", "run", "--queue", "-S", "seed=1")
    run(project, "dvc", "exp", "run", "--queue", "-S", "seed=2")
    run(project, "dvc", "queue", "start", "-j", "2")
    deadline = time.time() + 900
    while time.time() < deadline:
        status = run(project, "dvc", "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert status.count("Success") == 2, status
    shown = json.loads(run(project, "dvc", "exp", "show", "--json").stdout)
    experiments = [e for rev in shown for e in (rev.get("experiments") or [])]
    seeds = []
    for exp in experiments:
        data = exp["revs"][0]["data"]
        params = data["params"]["params.yaml"]["data"]
        seeds.append(params["seed"])
        metrics = data["metrics"]["reports/metrics/seg.json"]["data"]
        assert 0 <= metrics["miou"] <= 100
    assert sorted(seeds) == [1, 2]
