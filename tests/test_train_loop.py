"""The shared training loop: it learns, it is deterministic, and an interrupted run resumes exactly."""
import json
import logging

import pytest
import torch
import torch._dynamo  # noqa: F401  (the first optimizer imports it: seconds, paid once here, not in each test)
from torch.utils.data import TensorDataset

from textwsss.training.loop import TrainConfig, fit, previous_checkpoint


class Interrupt(Exception):
    pass


def _data(n=32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


def _model():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(8, 2))


def _step(fail_at=None):
    calls = {"n": 0}

    def step(model, batch, device):
        calls["n"] += 1
        if fail_at is not None and calls["n"] == fail_at:
            raise Interrupt
        x, y = (t.to(device) for t in batch)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        return {"total": loss, "ce": loss}
    return step


def _cfg(tmp_path, **kw):
    base = dict(epochs=4, batch_size=8, lr=0.5, optimizer="sgd", seed=3, device="cpu",
                checkpoint=tmp_path / "ckpt.pt", live_dir=tmp_path / "live", fingerprint="run-a")
    return TrainConfig(**{**base, **kw})


def _accuracy(model, data):
    model.eval()
    x, y = data.tensors
    return (model(x).argmax(1) == y).float().mean().item()


def test_loop_learns(tmp_path):
    data = _data()
    model = _model()
    before = _accuracy(model, data)
    fit(model, data, _step(), [{"params": model.parameters()}], _cfg(tmp_path, epochs=6))
    assert _accuracy(model, data) > max(before, 0.85)
    logged = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert "ce" in logged["train"] and "lr" in logged["train"]
    lr_log = (tmp_path / "live" / "plots" / "metrics" / "train" / "lr.tsv").read_text().splitlines()
    assert float(lr_log[1].split("\t")[-1]) == pytest.approx(0.5)  # first step: the base rate, params lr
    assert (tmp_path / "live" / "plots" / "metrics" / "train" / "ce.tsv").is_file()


def test_same_seed_same_weights(tmp_path):
    a, b = _model(), _model()
    fit(a, _data(), _step(), [{"params": a.parameters()}], _cfg(tmp_path / "a"))
    fit(b, _data(), _step(), [{"params": b.parameters()}], _cfg(tmp_path / "b"))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    # ... and byte-identical checkpoint files, so DVC sees the same output hash on a rerun
    assert (tmp_path / "a" / "ckpt.pt").read_bytes() == (tmp_path / "b" / "ckpt.pt").read_bytes()


def test_interrupted_run_resumes_to_identical_weights(tmp_path):
    reference = _model()
    fit(reference, _data(), _step(), [{"params": reference.parameters()}], _cfg(tmp_path / "ref"))

    interrupted = _model()
    with pytest.raises(Interrupt):  # dies in the middle of epoch 3 (4 steps per epoch)
        fit(interrupted, _data(), _step(fail_at=11), [{"params": interrupted.parameters()}], _cfg(tmp_path / "run"))
    assert torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)["epoch"] == 1
    resumed = _model()  # a new process: fresh weights, everything comes from the checkpoint
    fit(resumed, _data(), _step(), [{"params": resumed.parameters()}], _cfg(tmp_path / "run"))
    for pa, pb in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(pa, pb)
    steps = [int(line.split("\t")[0]) for line in
             (tmp_path / "run" / "live" / "plots" / "metrics" / "train" / "ce.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(16))  # the partial epoch's rows were dropped, no step logged twice


def _counting_step(calls: list, fail_at=None):
    inner = _step(fail_at)

    def step(model, batch, device):
        calls.append(1)
        return inner(model, batch, device)
    return step


def test_checkpoint_of_another_run_is_not_resumed(tmp_path):
    reference = _model()
    fit(reference, _data(), _step(), [{"params": reference.parameters()}], _cfg(tmp_path / "ref"))
    # another configuration (another lr, fingerprint run-b) stopped after its epoch 2 of 4 in the same folder:
    # resuming its checkpoint would give other weights
    other = _model()
    with pytest.raises(Interrupt):
        fit(other, _data(), _step(fail_at=11), [{"params": other.parameters()}],
            _cfg(tmp_path / "run", lr=0.1, fingerprint="run-b"))
    ours, calls = _model(), []
    fit(ours, _data(), _counting_step(calls), [{"params": ours.parameters()}], _cfg(tmp_path / "run"))
    assert len(calls) == 16  # all 4 epochs of 4 steps: trained from scratch
    for pa, pb in zip(reference.parameters(), ours.parameters()):
        assert torch.equal(pa, pb)


def _interrupted(tmp_path, fail_at):
    model = _model()
    with pytest.raises(Interrupt):
        fit(model, _data(), _step(fail_at=fail_at), [{"params": model.parameters()}], _cfg(tmp_path / "run"))
    return tmp_path / "run" / "ckpt.pt"


def test_truncated_checkpoint_is_set_aside_and_training_resumes_from_the_epoch_before(tmp_path, caplog):
    reference = _model()
    fit(reference, _data(), _step(), [{"params": reference.parameters()}], _cfg(tmp_path / "ref"))
    checkpoint = _interrupted(tmp_path, fail_at=11)  # in epoch 3: checkpoint of epoch 2, the previous of epoch 1
    assert torch.load(previous_checkpoint(checkpoint), weights_only=False)["epoch"] == 0
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    resumed, calls = _model(), []
    with caplog.at_level(logging.INFO, logger="textwsss.training.loop"):
        fit(resumed, _data(), _counting_step(calls), [{"params": resumed.parameters()}], _cfg(tmp_path / "run"))
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(checkpoint) in m and "cannot be read" in m and "ckpt.pt.corrupt" in m for m in messages)
    assert (tmp_path / "run" / "ckpt.pt.corrupt").is_file()
    assert len(calls) == 12  # epochs 2-4: one epoch lost, not the run
    for pa, pb in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(pa, pb)
    assert checkpoint.read_bytes() == (tmp_path / "ref" / "ckpt.pt").read_bytes()


def test_checkpoint_that_fails_its_hash_with_no_good_one_left_trains_from_scratch(tmp_path, caplog):
    reference = _model()
    fit(reference, _data(), _step(), [{"params": reference.parameters()}], _cfg(tmp_path / "ref"))
    checkpoint = _interrupted(tmp_path, fail_at=6)  # in epoch 2: the checkpoint of epoch 1, no previous one
    assert not previous_checkpoint(checkpoint).exists()
    # a readable file whose weights changed after it was written (torch.load does not notice a flipped bit)
    state = torch.load(checkpoint, weights_only=False)
    state["model"]["0.weight"][0, 0] += 1.0
    torch.save(state, checkpoint)
    resumed, calls = _model(), []
    with caplog.at_level(logging.WARNING, logger="textwsss.training.loop"):
        fit(resumed, _data(), _counting_step(calls), [{"params": resumed.parameters()}], _cfg(tmp_path / "run"))
    assert any(str(checkpoint) in r.getMessage() and "does not match its recorded hash" in r.getMessage()
               for r in caplog.records)
    assert len(calls) == 16
    # from scratch: byte-identical to the uninterrupted run, the checkpoint (and its previous one) included
    reference_file = tmp_path / "ref" / "ckpt.pt"
    assert checkpoint.read_bytes() == reference_file.read_bytes()
    assert previous_checkpoint(checkpoint).read_bytes() == previous_checkpoint(reference_file).read_bytes()


def test_head_learning_rate_multiplier(tmp_path):
    model = _model()
    groups = [{"params": model[0].parameters(), "lr_mult": 1.0}, {"params": model[3].parameters(), "lr_mult": 10.0}]
    from textwsss.training.loop import build_optimizer

    opt = build_optimizer(groups, _cfg(tmp_path, lr=0.01))
    assert [g["lr"] for g in opt.param_groups] == [0.01, pytest.approx(0.1)]
