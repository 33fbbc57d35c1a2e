"""The shared training loop under torchrun: 2 CPU processes (gloo) train one model, rank 0 alone writes.

Each rank gets its own checkpoint and dvclive paths so the test can see which rank wrote what; the
resume launch gets rank 0's checkpoint copied to rank 1's path, as a shared file system would show it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[1] / "src"
EPOCHS = 3
STEPS_PER_EPOCH = 4  # 64 samples / (batch 8 x 2 ranks)

SCRIPT = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path

    import torch
    from torch.utils.data import TensorDataset

    from textwsss.training.loop import TrainConfig, fit

    out, epochs = Path(sys.argv[1]), int(sys.argv[2])
    rank = int(os.environ["RANK"])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    torch.manual_seed(100 + rank)  # different initial weights per rank: DDP must sync them
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    calls = []

    def step(net, batch, device):
        xb, yb = (t.to(device) for t in batch)
        loss = (net(xb).squeeze(-1) - yb).pow(2).mean()
        calls.append(float(loss.detach()))
        return {"total": loss, "mse": loss}

    cfg = TrainConfig(epochs=epochs, batch_size=8, lr=0.02, amp=False, device="cpu", seed=0,
                      checkpoint=out / f"ckpt{rank}.pt", live_dir=out / f"live{rank}", fingerprint="dist-test")
    fit(model, TensorDataset(x, y), step, [{"params": model.parameters()}], cfg, desc=f"rank{rank}")
    torch.save(model.state_dict(), out / f"final{rank}.pt")
    (out / f"losses{rank}.json").write_text(json.dumps(calls))
""")


def _launch(script: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(script), str(out), str(EPOCHS)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _metric_rows(live_dir: Path) -> list[float]:
    tsv = live_dir / "plots" / "metrics" / "train" / "total.tsv"
    lines = tsv.read_text().splitlines()
    col = lines[0].split("\t").index("total")
    return [float(line.split("\t")[col]) for line in lines[1:]]


def test_fit_under_torchrun_with_two_cpu_processes(tmp_path):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    _launch(script, out)

    # both ranks finished, with the same weights
    final = [torch.load(out / f"final{r}.pt", weights_only=True) for r in (0, 1)]
    assert final[0].keys() == final[1].keys()
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])
    losses = [json.loads((out / f"losses{r}.json").read_text()) for r in (0, 1)]
    assert [len(v) for v in losses] == [EPOCHS * STEPS_PER_EPOCH] * 2  # each rank saw half the data
    assert losses[0] != losses[1]  # ... a different half

    # only rank 0 wrote the checkpoint and the logs
    assert (out / "ckpt0.pt").is_file() and not (out / "ckpt1.pt").exists()
    assert (out / "live0").is_dir() and not (out / "live1").exists()
    ckpt = torch.load(out / "ckpt0.pt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == EPOCHS - 1
    assert all(torch.equal(ckpt["model"][k], final[0][k]) for k in final[0])

    # the loss went down (rank 0's logged per-step loss: last epoch vs first)
    logged = _metric_rows(out / "live0")
    assert len(logged) == EPOCHS * STEPS_PER_EPOCH
    first, last = logged[:STEPS_PER_EPOCH], logged[-STEPS_PER_EPOCH:]
    assert sum(last) / len(last) < 0.5 * sum(first) / len(first)

    # a second launch resumes after the last epoch: nothing is retrained, nothing rewritten
    shutil.copy(out / "ckpt0.pt", out / "ckpt1.pt")  # what a shared file system shows rank 1
    stamp = (out / "ckpt0.pt").stat().st_mtime_ns
    _launch(script, out)
    assert [json.loads((out / f"losses{r}.json").read_text()) for r in (0, 1)] == [[], []]
    for r in (0, 1):
        again = torch.load(out / f"final{r}.pt", weights_only=True)
        assert all(torch.equal(again[k], final[0][k]) for k in final[0])
    assert (out / "ckpt0.pt").stat().st_mtime_ns == stamp
    assert torch.load(out / "ckpt0.pt", map_location="cpu", weights_only=False)["epoch"] == EPOCHS - 1
    assert _metric_rows(out / "live0") == logged and not (out / "live1").exists()
