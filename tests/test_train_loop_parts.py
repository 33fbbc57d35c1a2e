"""The training loop's parts on their own (fast): the config of a params section, optimizers and learning-rate
schedules against hand-computed values, seeding, process ranks, checkpoint saving and reading, gradient clipping
and what the loop logs."""
import contextlib
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch._dynamo  # noqa: F401  (the first optimizer imports it: seconds, paid once here, not in each test)
from torch.utils.data import TensorDataset

from textwsss.training import loop
from textwsss.training.loop import (
    Distributed, TrainConfig, build_optimizer, content_digest, fit, lr_schedule, poly_schedule, previous_checkpoint,
    read_checkpoint, save_checkpoint, seed_everything, train_config,
)


def _params(n=2):
    return [torch.nn.Parameter(torch.zeros(2)) for _ in range(n)]


# ---- config, optimizer, schedules ------------------------------------------------------------------------------
def test_train_config_takes_every_field_of_the_section(tmp_path):
    section = SimpleNamespace(epochs=7, batch_size=3, lr=0.25, optimizer="adam", momentum=0.5, weight_decay=0.01,
                              schedule="step", poly_power=2.0, step_epochs=[4, 6], step_gamma=0.3, amp=False,
                              grad_clip=1.5, crop_size=99)
    cfg = train_config(section, seed=11, device="cuda:1", workers=2, checkpoint=tmp_path / "c.pt",
                       live_dir=tmp_path / "live", fingerprint="fp")
    assert cfg == TrainConfig(epochs=7, batch_size=3, lr=0.25, optimizer="adam", momentum=0.5, weight_decay=0.01,
                              schedule="step", poly_power=2.0, step_epochs=(4, 6), step_gamma=0.3, amp=False,
                              seed=11, device="cuda:1", workers=2, checkpoint=tmp_path / "c.pt",
                              live_dir=tmp_path / "live", fingerprint="fp", grad_clip=1.5)
    assert isinstance(cfg.step_epochs, tuple)  # hashable: the config is a frozen dataclass


def test_sgd_and_adam_get_the_config_and_the_group_multipliers():
    a, b = _params()
    cfg = TrainConfig(epochs=1, batch_size=1, lr=0.2, momentum=0.7, weight_decay=0.03)
    sgd = build_optimizer([{"params": [a]}, {"params": [b], "lr_mult": 10.0}], cfg)
    assert isinstance(sgd, torch.optim.SGD)
    assert [g["lr"] for g in sgd.param_groups] == [0.2, pytest.approx(2.0)]
    assert [(g["momentum"], g["weight_decay"]) for g in sgd.param_groups] == [(0.7, 0.03)] * 2
    assert sgd.defaults["lr"] == 0.2
    adam = build_optimizer([{"params": [a], "lr_mult": 0.5}], TrainConfig(**{**cfg.__dict__, "optimizer": "adam"}))
    assert isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[0]["lr"] == pytest.approx(0.1) and adam.param_groups[0]["weight_decay"] == 0.03
    assert adam.defaults["lr"] == 0.2
    with pytest.raises(ValueError, match=r"^optimizer: expected 'sgd' or 'adam', got 'rmsprop'$"):
        build_optimizer([{"params": [a]}], TrainConfig(**{**cfg.__dict__, "optimizer": "rmsprop"}))


def _factors(scheduler, steps):
    return [scheduler.lr_lambdas[0](s) for s in steps]


def test_poly_schedule_by_hand():
    opt = torch.optim.SGD(_params(1), lr=1.0)
    # (1 - step / 4) ** 0.9, then 0 from the last step on (never negative)
    assert _factors(poly_schedule(opt, 4, 0.9), [0, 1, 2, 4, 6]) == \
        [1.0, pytest.approx(0.75 ** 0.9), pytest.approx(0.5 ** 0.9), 0.0, 0.0]
    assert _factors(poly_schedule(opt, 0, 1.0), [0, 1]) == [1.0, 0.0]  # no steps: counted as one
    cfg = TrainConfig(epochs=2, batch_size=1, lr=1.0, poly_power=2.0)
    assert _factors(lr_schedule(opt, cfg, 5), [0, 3, 5, 10]) == [1.0, pytest.approx(0.7 ** 2), 0.25, 0.0]


def test_step_schedule_multiplies_at_the_first_step_of_each_milestone_epoch():
    opt = torch.optim.SGD(_params(1), lr=1.0)
    cfg = TrainConfig(epochs=6, batch_size=1, lr=1.0, schedule="step", step_epochs=(3, 5), step_gamma=0.1)
    # 10 steps per epoch: epoch 3 starts at step 20, epoch 5 at step 40
    assert _factors(lr_schedule(opt, cfg, 10), [0, 19, 20, 39, 40, 59]) == \
        [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.01), pytest.approx(0.01)]
    with pytest.raises(ValueError, match=r"^schedule: expected 'poly' or 'step', got 'cosine'$"):
        lr_schedule(opt, TrainConfig(epochs=1, batch_size=1, lr=1.0, schedule="cosine"), 10)


# ---- seeding, processes --------------------------------------------------------------------------------------
def test_seed_everything_seeds_python_numpy_and_torch():
    seed = 2**32 + 5  # numpy takes seeds below 2**32 only: it gets seed % 2**32
    seed_everything(seed)
    got = (random.random(), np.random.rand(), torch.rand(1).item())
    assert got == (random.Random(seed).random(), np.random.RandomState(5).rand(),
                   torch.rand(1, generator=torch.Generator().manual_seed(seed)).item())


def test_a_data_loader_worker_seeds_numpy_and_python_from_its_torch_seed():
    torch.manual_seed(2**32 + 7)
    loop._worker_init(0)
    assert (np.random.rand(), random.random()) == (np.random.RandomState(7).rand(), random.Random(7).random())


def test_a_single_process_is_rank_zero_of_one(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    env = Distributed("cpu")
    assert (env.world, env.rank, env.device, env.main) == (1, 0, torch.device("cpu"), True)
    assert env.mean({"a": 0.1}) == {"a": 0.1}
    env.barrier()
    monkeypatch.setenv("RANK", "3")
    assert Distributed("cpu").rank == 3 and not Distributed("cpu").main


def test_the_mean_over_ranks_divides_the_sum_by_the_world_size(monkeypatch, tmp_path):
    import torch.distributed as dist

    # a real gloo group of one process standing in for two ranks: all_reduce sums one value, the mean halves it
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        env = Distributed("cpu")
        env.world = 2
        assert env.mean({"b": 0.1, "a": 3.0}) == {"a": 1.5, "b": 0.05}  # float64 sums: 0.1 / 2 exactly 0.05
        env.barrier()
    finally:
        dist.destroy_process_group()


# ---- checkpoints ---------------------------------------------------------------------------------------------
def test_previous_checkpoint_path():
    assert previous_checkpoint(Path("a/ckpt.pt")) == Path("a/ckpt.prev.pt")
    assert previous_checkpoint("b/state.pth") == Path("b/state.prev.pth")


def test_save_checkpoint_keeps_the_previous_one_and_read_checkpoint_checks_the_digest(tmp_path):
    path = tmp_path / "run" / "ckpt.pt"
    save_checkpoint(path, {"epoch": 0, "w": torch.ones(2)})
    assert not previous_checkpoint(path).exists()
    save_checkpoint(path, {"epoch": 1, "w": torch.zeros(2)})
    assert read_checkpoint(previous_checkpoint(path))["epoch"] == 0
    state = read_checkpoint(path)
    assert state.keys() == {"epoch", "w"} and state["epoch"] == 1 and torch.equal(state["w"], torch.zeros(2))
    raw = torch.load(path, weights_only=False)
    assert raw["digest"] == content_digest({"epoch": 1, "w": torch.zeros(2)})
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.prev.pt", "ckpt.pt"]  # no temporary left


def test_read_checkpoint_says_why_it_cannot_use_a_file(tmp_path):
    (tmp_path / "text.pt").write_text("not a checkpoint\nsecond line")
    # the first line of torch's own message
    with pytest.raises(ValueError, match=r"^cannot be read \(UnpicklingError: invalid load key, 'n'\.\)$"):
        read_checkpoint(tmp_path / "text.pt")
    torch.save({"model": {}}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"^has no content hash \(not a checkpoint of this version\)$"):
        read_checkpoint(tmp_path / "old.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="has no content hash"):
        read_checkpoint(tmp_path / "list.pt")
    torch.save({"epoch": 3, "digest": content_digest({"epoch": 2})}, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match=r"^its content does not match its recorded hash$"):
        read_checkpoint(tmp_path / "edited.pt")


def test_an_error_without_a_message_is_named_by_its_type(tmp_path, monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError()

    monkeypatch.setattr(loop.torch, "load", fails)
    with pytest.raises(ValueError, match=r"^cannot be read \(RuntimeError: \)$"):
        read_checkpoint(tmp_path / "any.pt")


def test_a_checkpoint_is_loaded_onto_the_cpu_wherever_it_was_saved(tmp_path, monkeypatch):
    # a checkpoint written on a GPU must load on a machine without one: torch.load is told to map to the CPU
    save_checkpoint(tmp_path / "ckpt.pt", {"epoch": 0})
    calls = []
    real = torch.load
    monkeypatch.setattr(loop.torch, "load", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    assert read_checkpoint(tmp_path / "ckpt.pt") == {"epoch": 0}
    assert calls == [{"map_location": "cpu", "weights_only": False}]


def test_only_the_main_process_moves_a_damaged_checkpoint_aside(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"garbage")
    cfg = TrainConfig(epochs=1, batch_size=1, lr=1.0, checkpoint=path)
    assert loop._load_checkpoint(cfg, main=False) == (None, None)
    assert path.read_bytes() == b"garbage" and not (tmp_path / "ckpt.pt.corrupt").exists()
    assert loop._load_checkpoint(cfg) == (None, None)  # main by default
    assert not path.exists() and (tmp_path / "ckpt.pt.corrupt").read_bytes() == b"garbage"
    assert loop._load_checkpoint(TrainConfig(epochs=1, batch_size=1, lr=1.0), main=True) == (None, None)


def test_the_previous_checkpoint_is_used_when_the_last_one_is_of_another_run(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 0, "fingerprint": "a"})
    save_checkpoint(path, {"epoch": 1, "fingerprint": "b"})
    state, found = loop._load_checkpoint(TrainConfig(epochs=3, batch_size=1, lr=1.0, checkpoint=path,
                                                     fingerprint="a"))
    assert found == previous_checkpoint(path) and state["epoch"] == 0
    assert path.is_file()  # of another run, not damaged: left where it is


# ---- the loop: one step by hand, what it logs -----------------------------------------------------------------
def _linear():
    torch.manual_seed(0)
    return torch.nn.Linear(3, 1)


def _regression(n=4):
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 3, generator=g), torch.randn(n, 1, generator=g))


def _mse(model, batch, device):
    x, y = batch
    loss = torch.nn.functional.mse_loss(model(x), y)
    return {"total": loss, "mse": loss}


def _one_step_reference(data, lr, clip):
    """The weights after one plain SGD step on the whole data set (no momentum, no decay), the gradient scaled
    to norm `clip` when it is longer (clip 0: not scaled), and the gradient's norm."""
    model = _linear()
    x, y = data.tensors
    torch.nn.functional.mse_loss(model(x), y).backward()
    grads = [p.grad for p in model.parameters()]
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    scale = min(1.0, clip / (norm + 1e-6)) if clip else 1.0
    return [p.detach() - lr * scale * g for p, g in zip(model.parameters(), grads)], norm


@pytest.mark.parametrize("clip", [0.0, 0.01, 1e6])
def test_one_step_is_plain_sgd_with_the_gradient_clipped_to_its_max_norm(tmp_path, clip):
    data = _regression()
    expected, norm = _one_step_reference(data, lr=0.5, clip=clip)
    assert clip == 0 or clip > norm or clip < norm / 10  # the small clip really clips
    model = _linear()
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.5, momentum=0.0, weight_decay=0.0, grad_clip=clip,
                      live_dir=tmp_path / "live")
    fit(model, data, _mse, [{"params": model.parameters()}], cfg)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-7)
    logged = json.loads((tmp_path / "live" / "metrics.json").read_text())["train"]
    if clip:
        assert logged["grad_norm"] == pytest.approx(norm, rel=1e-5)  # the norm before clipping
    else:
        assert "grad_norm" not in logged


def _tsv(live: Path, name: str) -> list[list[float]]:
    rows = (live / "plots" / "metrics" / "train" / f"{name}.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    return [[float(dict(zip(header, r.split("\t")))[k]) for k in ("step", name)] for r in rows[1:]]


def test_each_step_logs_its_loss_and_the_base_rate_it_used(tmp_path):
    data = _regression(10)
    model = _linear()
    calls = []

    def step(m, batch, device):
        calls.append(len(batch[0]))
        return _mse(m, batch, device)

    # 10 samples in batches of 4: the last partial batch is dropped, 2 steps per epoch, 6 in all
    cfg = TrainConfig(epochs=3, batch_size=4, lr=0.1, poly_power=1.0, live_dir=tmp_path / "live")
    fit(model, data, step, [{"params": model.parameters(), "lr_mult": 10.0}], cfg)
    assert calls == [4] * 6
    # the base rate (lr_mult divided out) of each step: 0.1 x (1 - step / 6)
    assert _tsv(tmp_path / "live", "lr") == [[s, pytest.approx(0.1 * (1 - s / 6))] for s in range(6)]
    assert [s for s, _ in _tsv(tmp_path / "live", "mse")] == list(range(6))
    logged = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert logged["step"] == 5 and "seconds" in logged and logged["seconds"] >= 0
    assert logged["train"]["mse"] == pytest.approx(_tsv(tmp_path / "live", "mse")[-1][1])


def test_a_data_set_smaller_than_a_batch_is_one_step_per_epoch(tmp_path):
    calls = []

    def step(m, batch, device):
        calls.append(len(batch[0]))
        return _mse(m, batch, device)

    model = _linear()
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.1, poly_power=1.0, live_dir=tmp_path / "live")
    fit(model, _regression(3), step, [{"params": model.parameters()}], cfg)
    assert calls == [3, 3]  # kept, not dropped
    assert _tsv(tmp_path / "live", "lr") == [[0, pytest.approx(0.1)], [1, pytest.approx(0.05)]]  # 2 steps in all


def test_a_fresh_run_clears_old_logs_and_a_resumed_one_keeps_them(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    (live / "stale.txt").write_text("an unrelated earlier run")
    model = _linear()
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.1, live_dir=live, checkpoint=tmp_path / "ckpt.pt")
    fit(model, _regression(), _mse, [{"params": model.parameters()}], cfg)
    assert not (live / "stale.txt").exists()
    # two more epochs of the same run: resumed from epoch 1, whose log rows stay
    (live / "kept.txt").write_text("x")
    cfg2 = TrainConfig(**{**cfg.__dict__, "epochs": 3})
    fit(model, _regression(), _mse, [{"params": model.parameters()}], cfg2)
    assert (live / "kept.txt").is_file()
    assert [s for s, _ in _tsv(live, "mse")] == [0, 1, 2]


def test_truncate_logs_drops_the_rows_of_the_partial_epoch(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "loss.tsv").write_text("timestamp\tstep\tloss\n1\t0\t0.5\n2\t1\t0.4\n3\t2\t0.3\n")
    (tmp_path / "no_step.tsv").write_text("x\ty\n1\t2\n")
    (tmp_path / "empty.tsv").write_text("")
    loop._truncate_logs(tmp_path, 2)
    assert (tmp_path / "a" / "loss.tsv").read_text() == "timestamp\tstep\tloss\n1\t0\t0.5\n2\t1\t0.4\n"
    assert (tmp_path / "no_step.tsv").read_text() == "x\ty\n1\t2\n"
    assert (tmp_path / "empty.tsv").read_text() == ""


@contextlib.contextmanager
def _as_rank_of_two(monkeypatch, tmp_path, rank):
    """One real gloo process standing in for rank `rank` of 2: the loop shards the data as for 2 processes."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("rank", [0, 1])
def test_under_torchrun_each_rank_trains_on_its_share_and_only_rank_0_writes(monkeypatch, tmp_path, rank):
    with _as_rank_of_two(monkeypatch, tmp_path, rank):
        data = TensorDataset(torch.arange(10.0)[:, None], torch.zeros(10, 1))
        seen = []

        def step(m, batch, device):
            seen.append([int(v) for v in batch[0][:, 0]])
            return _mse(m, batch, device)

        model = torch.nn.Linear(1, 1)
        cfg = TrainConfig(epochs=2, batch_size=2, lr=0.01, seed=3, checkpoint=tmp_path / "ckpt.pt",
                          live_dir=tmp_path / "live")
        fit(model, data, step, [{"params": model.parameters()}], cfg)
    # DistributedSampler's documented order: a permutation seeded with seed + epoch, every 2nd index from the
    # rank's own; 5 samples per rank in batches of 2, the last partial batch dropped
    expected = []
    for epoch in range(2):
        perm = torch.randperm(10, generator=torch.Generator().manual_seed(3 + epoch)).tolist()[rank::2]
        expected += [perm[0:2], perm[2:4]]
    assert seen == expected
    assert (tmp_path / "ckpt.pt").is_file() == (rank == 0) and (tmp_path / "live").exists() == (rank == 0)
    if rank == 0:  # the schedule counts this rank's steps: 2 epochs x 2, lr x (1 - step / 4) ** 0.9
        assert _tsv(tmp_path / "live", "lr") == [[s, pytest.approx(0.01 * (1 - s / 4) ** 0.9)] for s in range(4)]


def test_the_checkpoint_carries_the_generators_states_at_the_end_of_its_epoch(tmp_path):
    model = _linear()
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.1, checkpoint=tmp_path / "ckpt.pt")
    fit(model, _regression(), _mse, [{"params": model.parameters()}], cfg)
    rng = read_checkpoint(tmp_path / "ckpt.pt")["rng"]  # nothing draws a random number after the save
    assert set(rng) == {"python", "numpy", "torch"} | ({"cuda"} if torch.cuda.is_available() else set())
    assert rng["python"] == random.getstate() and torch.equal(rng["torch"], torch.get_rng_state())
    numpy_state = np.random.get_state()
    assert rng["numpy"][0] == numpy_state[0] and np.array_equal(rng["numpy"][1], numpy_state[1])
    assert rng["numpy"][2:] == numpy_state[2:]
    if torch.cuda.is_available():
        cuda = torch.cuda.get_rng_state_all()
        assert len(rng["cuda"]) == len(cuda) and all(torch.equal(a, b) for a, b in zip(rng["cuda"], cuda))


def test_dvclive_makes_no_experiment_report_or_dvc_yaml_of_its_own(tmp_path, monkeypatch):
    # dvc.yaml declares the plots and DVC runs the experiments: dvclive must neither edit the one nor start the
    # other (its defaults would, outside `dvc repro`), and a resumed run appends to the logs
    import dvclive

    opened = []

    class Recording(dvclive.Live):
        def __init__(self, *args, **kwargs):
            opened.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(dvclive, "Live", Recording)
    model = _linear()
    live = tmp_path / "live"
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.1, live_dir=live, checkpoint=tmp_path / "ckpt.pt")
    fit(model, _regression(), _mse, [{"params": model.parameters()}], cfg)
    fit(model, _regression(), _mse, [{"params": model.parameters()}], TrainConfig(**{**cfg.__dict__, "epochs": 2}))
    expected = dict(dir=str(live), report=None, save_dvc_exp=False, dvcyaml=None)
    assert opened == [{**expected, "resume": False}, {**expected, "resume": True}]


# ---- what an epoch logs, how it shuffles and seeds, what a step leaves alone --------------------------------
def test_each_epoch_logs_the_mean_of_its_steps_losses(tmp_path, caplog):
    # 8 samples in batches of 2: 4 steps per epoch; the step function's 'k' is the call number (1, 2, ...), so the
    # epochs' means are 2.5 and 6.5 and the log line names the run
    calls = []

    def step(m, batch, device):
        calls.append(1)
        return {**_mse(m, batch, device), "k": torch.tensor(float(len(calls)))}

    model = _linear()
    cfg = TrainConfig(epochs=2, batch_size=2, lr=0.01, live_dir=tmp_path / "live")
    with caplog.at_level("INFO", logger="textwsss.training.loop"):
        fit(model, _regression(8), step, [{"params": model.parameters()}], cfg)
    lines = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == ["train epoch 1/2", "train epoch 2/2"]
    assert "k 2.5000" in lines[0] and "k 6.5000" in lines[1], lines


def test_the_wall_time_sums_the_epochs_to_a_tenth_of_a_second(tmp_path):
    import time

    def slow(m, batch, device):
        time.sleep(0.2)
        return _mse(m, batch, device)

    model = _linear()
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.01, live_dir=tmp_path / "live")
    start = time.perf_counter()
    fit(model, _regression(4), slow, [{"params": model.parameters()}], cfg)
    elapsed = time.perf_counter() - start
    seconds = json.loads((tmp_path / "live" / "metrics.json").read_text())["seconds"]
    # two epochs of one 0.2 s step each, within the call's own wall time, in tenths
    assert 0.4 <= seconds <= elapsed + 0.05, (seconds, elapsed)
    assert seconds == pytest.approx(round(seconds, 1), abs=1e-9)


def test_every_epoch_shuffles_its_samples_anew(tmp_path):
    seen = []

    def step(m, batch, device):
        seen.append(int(batch[0][0, 0]))
        return {"total": (m(batch[0].float()) ** 2).mean()}

    data = TensorDataset(torch.arange(8).repeat(3, 1).T.contiguous())  # sample i is (i, i, i)
    model = _linear()
    fit(model, data, step, [{"params": model.parameters()}], TrainConfig(epochs=2, batch_size=1, lr=0.0))
    first, second = seen[:8], seen[8:]
    assert sorted(first) == sorted(second) == list(range(8))
    assert first != list(range(8)) and first != second


def test_a_parameter_without_a_gradient_in_a_step_is_left_alone_by_it(tmp_path):
    # zero_grad(set_to_none=True): a parameter the first step's loss reaches and no later one has no gradient
    # after that step, so SGD skips it; a zeroed gradient would let the decay and the momentum move it on
    model = _linear()
    extra = torch.nn.Parameter(torch.ones(1))
    calls = []

    def step(m, batch, device):
        calls.append(1)
        losses = _mse(m, batch, device)
        if len(calls) == 1:
            losses = {**losses, "total": losses["total"] + (extra ** 2).sum()}
        return losses

    cfg = TrainConfig(epochs=2, batch_size=2, lr=0.1, momentum=0.9, weight_decay=0.1, poly_power=0.0)
    fit(model, _regression(4), step, [{"params": [*model.parameters(), extra]}], cfg)
    # the one step: gradient 2 x 1 + decay 0.1 x 1 = 2.1, so 1 - 0.1 x 2.1
    assert len(calls) == 4 and extra.item() == pytest.approx(0.79, abs=1e-6)


def test_each_loader_worker_draws_its_own_numpy_numbers(tmp_path):
    drawn = []

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.tensor([np.random.rand()], dtype=torch.float32)

    def step(m, batch, device):
        drawn.extend(batch.flatten().tolist())
        return {"total": (m(batch.repeat(1, 3)) ** 2).mean()}

    model = _linear()
    fit(model, Noisy(), step, [{"params": model.parameters()}], TrainConfig(epochs=1, batch_size=1, lr=0.0, workers=2))
    # two worker processes forked from one parent, each with a numpy generator of its own seed (PyTorch's worker
    # loop and _worker_init both seed it): the same numbers in both would repeat every augmentation
    assert len(drawn) == 8 and len(set(drawn)) == 8, drawn


def test_the_checkpoint_before_is_resumed_when_the_last_is_missing(tmp_path):
    # a kill between setting the last checkpoint aside and writing the new one leaves only the one before
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 0, "fingerprint": "a"})
    save_checkpoint(path, {"epoch": 1, "fingerprint": "a"})
    path.unlink()
    state, found = loop._load_checkpoint(TrainConfig(epochs=3, batch_size=1, lr=1.0, checkpoint=path, fingerprint="a"))
    assert found == previous_checkpoint(path) and state["epoch"] == 0


def test_under_torchrun_rank_1_leaves_a_damaged_checkpoint_to_rank_0(monkeypatch, tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"garbage")
    with _as_rank_of_two(monkeypatch, tmp_path, 1):
        model = _linear()
        cfg = TrainConfig(epochs=1, batch_size=2, lr=0.01, checkpoint=tmp_path / "ckpt.pt")
        fit(model, _regression(4), _mse, [{"params": model.parameters()}], cfg)
    # two processes must not both move it: rank 0 does, rank 1 reads around it
    assert (tmp_path / "ckpt.pt").read_bytes() == b"garbage" and not (tmp_path / "ckpt.pt.corrupt").exists()
