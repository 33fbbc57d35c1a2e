"""One training loop for every trained model (CAM network, DeepLab, CRIS).

Short enough to read in one sitting: seeding, poly-decay SGD/Adam with per-group learning-rate
multipliers, AMP on CUDA, DistributedDataParallel under torchrun (gloo on CPU, NCCL on GPU), a
checkpoint at the end of every epoch and automatic resume, dvclive logs of every loss term and the
learning rate, and a progress bar. The model-specific part is a `step_fn(model, batch, device) ->
{"total": loss, other terms...}`.

Resume is exact: every epoch re-seeds all generators from (seed, epoch), so an epoch's shuffling and
augmentation do not depend on whether the run was interrupted before it.

A checkpoint is only a cache of progress: losing it costs time, never the run. It carries a hash of its own
content (torch.load does not check one: a flipped bit in a tensor loads silently), the previous epoch's one is
kept beside it (checkpoint.prev.pt), and one that cannot be read or does not match its hash is logged with its
path and the reason, moved aside (checkpoint.pt.corrupt) and training resumes from the previous one, or from
scratch when none is good.
"""
from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm import tqdm

from ..io import atomic_path
from ..models.digest import content_digest  # here too: the loop's checkpoints were its first user
from ..models.runtime import place

log = logging.getLogger(__name__)
StepFn = Callable[[torch.nn.Module, tuple, torch.device], dict]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"  # sgd | adam
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "poly"  # poly | step
    poly_power: float = 0.9
    step_epochs: tuple[int, ...] = ()  # schedule step: lr x step_gamma at the start of each of these epochs
    step_gamma: float = 0.1
    amp: bool = True
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    checkpoint: Path | None = None  # resumable state, rewritten every epoch
    live_dir: Path | None = None  # dvclive folder
    fingerprint: str = ""  # identifies params + data: a checkpoint of another run is never resumed
    grad_clip: float = 0.0  # max global gradient norm (0: no clipping)


def train_config(section, *, seed: int, device: str, workers: int, checkpoint: Path, live_dir: Path,
                 fingerprint: str) -> TrainConfig:
    """The TrainConfig of a params training section (params.TrainCommon) and the run's paths."""
    return TrainConfig(
        epochs=section.epochs, batch_size=section.batch_size, lr=section.lr, optimizer=section.optimizer,
        momentum=section.momentum, weight_decay=section.weight_decay, schedule=section.schedule,
        poly_power=section.poly_power, step_epochs=tuple(section.step_epochs), step_gamma=section.step_gamma,
        amp=section.amp, grad_clip=section.grad_clip, seed=seed, device=device, workers=workers,
        checkpoint=checkpoint, live_dir=live_dir, fingerprint=fingerprint)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # differs per worker, derived from the epoch's seed
    np.random.seed(seed)
    random.seed(seed)


class Distributed:
    """Rank and world size under torchrun; a single process otherwise."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(device)
        if self.world > 1:
            if self.device.type == "cuda":
                self.device = torch.device("cuda", local_rank)
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def build_optimizer(param_groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = [{**g, "lr": cfg.lr * g.get("lr_mult", 1.0)} for g in param_groups]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {cfg.optimizer!r}")


def poly_schedule(optimizer, total_steps: int, power: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1 - step / max(1, total_steps)) ** power)


def lr_schedule(optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """poly: lr x (1 - step / steps)^poly_power (DeepLab, IRN, CLIMS); step: lr x step_gamma^(milestones passed),
    a milestone being the first step of an epoch in step_epochs, counted from 1 (CRIS: epoch 35 of 50)."""
    if cfg.schedule == "poly":
        return poly_schedule(optimizer, cfg.epochs * steps_per_epoch, cfg.poly_power)
    if cfg.schedule == "step":
        starts = [(e - 1) * steps_per_epoch for e in cfg.step_epochs]
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cfg.step_gamma ** sum(step >= s for s in starts))
    raise ValueError(f"schedule: expected 'poly' or 'step', got {cfg.schedule!r}")


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def previous_checkpoint(path: Path) -> Path:
    """Where the checkpoint of the epoch before the last one is kept."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Path, state: dict) -> None:
    """Writes `state` with its content digest, atomically; the checkpoint it replaces becomes the previous one
    (renamed just before the new one is, so at every moment one of them is whole)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: torch names the archive's folder after it, see io.save_torch
            torch.save({**state, "digest": content_digest(state)}, f)
        if path.exists():
            os.replace(path, previous_checkpoint(path))


def read_checkpoint(path: Path) -> dict:
    """The state save_checkpoint wrote; ValueError with the reason when it cannot be read or does not match its
    digest."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for a damaged file
        raise ValueError(f"cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") \
            from err
    if not isinstance(state, dict) or "digest" not in state:
        raise ValueError("has no content hash (not a checkpoint of this version)")
    digest = state.pop("digest")
    if content_digest(state) != digest:
        raise ValueError("its content does not match its recorded hash")
    return state


def _load_checkpoint(cfg: TrainConfig, main: bool = True) -> tuple[dict, Path] | tuple[None, None]:
    """(state, path) of the newest good checkpoint of this run (the last epoch's, else the one before it);
    damaged ones are set aside by the main process."""
    if cfg.checkpoint is None:
        return None, None
    for path in (Path(cfg.checkpoint), previous_checkpoint(cfg.checkpoint)):
        if not path.is_file():
            continue
        try:
            state = read_checkpoint(path)
        except ValueError as err:
            aside = path.with_name(path.name + ".corrupt")
            log.warning("%s %s; moved aside to %s, training resumes from the last good state", path, err, aside.name)
            if main:
                os.replace(path, aside)
            continue
        if state.get("fingerprint") != cfg.fingerprint:
            log.info("%s belongs to another configuration or data; not resumed", path)
            continue
        return state, path
    return None, None


def fit(model: torch.nn.Module, dataset: Dataset, step_fn: StepFn, param_groups: list[dict], cfg: TrainConfig,
        desc: str = "train") -> torch.nn.Module:
    """Trains `model` in place (resuming from `cfg.checkpoint` when it matches) and returns it."""
    env = Distributed(cfg.device)
    device = env.device
    place(model, device)
    optimizer = build_optimizer(param_groups, cfg)
    per_rank = math.ceil(len(dataset) / env.world)  # DistributedSampler pads every rank to this many samples
    drop_last = per_rank >= cfg.batch_size
    steps_per_epoch = (per_rank // cfg.batch_size if drop_last else math.ceil(per_rank / cfg.batch_size)) or 1
    scheduler = lr_schedule(optimizer, cfg, steps_per_epoch)
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, resumed, seconds = 0, False, 0.0
    state, path = _load_checkpoint(cfg, main=env.main)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, resumed = state["epoch"] + 1, True
        log.info("resuming %s from %s after epoch %d of %d", desc, path, state["epoch"] + 1, cfg.epochs)
    elif env.main and cfg.live_dir is not None and Path(cfg.live_dir).exists():
        shutil.rmtree(cfg.live_dir)  # logs of an unrelated earlier run
    env.barrier()

    net = DistributedDataParallel(model) if env.world > 1 else model
    step = start_epoch * steps_per_epoch
    if resumed and env.main and cfg.live_dir is not None:
        _truncate_logs(cfg.live_dir, step)
    live = _open_live(cfg, resumed) if env.main else None
    if live is not None:
        live.step = step
    for epoch in range(start_epoch, cfg.epochs):
        epoch_start = time.perf_counter()
        seed_everything(cfg.seed * 100_003 + epoch)
        if env.world > 1:
            sampler = DistributedSampler(dataset, num_replicas=env.world, rank=env.rank, shuffle=True, seed=cfg.seed)
            sampler.set_epoch(epoch)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                            worker_init_fn=_worker_init, drop_last=drop_last,
                            pin_memory=device.type == "cuda", persistent_workers=False)
        net.train()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        bar = tqdm(loader, desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}", disable=not env.main or None, leave=False)
        for batch in bar:
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                losses = step_fn(net, batch, device)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["total"]).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
                values_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if torch.isfinite(values_norm):  # AMP: an overflow step (inf/nan) is skipped by the scaler
                    losses = {**losses, "grad_norm": values_norm}
            scaler.step(optimizer)
            scaler.update()
            # The base rate this step used (params lr under the poly schedule); groups run at lr x lr_mult.
            group = optimizer.param_groups[0]
            step_lr = group["lr"] / group.get("lr_mult", 1.0)
            scheduler.step()
            values = {k: float(v.detach()) for k, v in losses.items()}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
            step += 1
            bar.set_postfix(loss=f"{values['total']:.4f}")
            if live is not None:
                for k, v in values.items():
                    live.log_metric(f"train/{k}", v)
                live.log_metric("train/lr", step_lr)
                live.next_step()
        means = env.mean({k: v / counts[k] for k, v in sums.items()})
        log.info("%s epoch %d/%d: %s", desc, epoch + 1, cfg.epochs,
                 ", ".join(f"{k} {v:.4f}" for k, v in sorted(means.items())))
        seconds += time.perf_counter() - epoch_start
        if env.main and cfg.checkpoint is not None:
            save_checkpoint(cfg.checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                             "epoch": epoch, "rng": _rng_state(), "fingerprint": cfg.fingerprint})
        env.barrier()
    if live is not None:
        # wall time of the epochs this process trained (a resumed run counts its own part only); kept out of the
        # checkpoint, whose bytes must not depend on timing
        live.summary["seconds"] = round(seconds, 1)
        live.end()
    return model


def _open_live(cfg: TrainConfig, resumed: bool):
    if cfg.live_dir is None:
        return None
    from dvclive import Live

    # dvcyaml=None: the pipeline's dvc.yaml declares these plots itself; dvclive must not edit it.
    return Live(dir=str(cfg.live_dir), resume=resumed, report=None, save_dvc_exp=False, dvcyaml=None)


def _truncate_logs(live_dir: Path, step: int) -> None:
    """Drops log rows of a partial epoch that a killed run wrote after its last checkpoint."""
    for tsv in Path(live_dir).rglob("*.tsv"):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        col = lines[0].split("\t").index("step") if "step" in lines[0].split("\t") else None
        if col is None:
            continue
        kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split("\t")[col]) < step]
        tsv.write_text("\n".join(kept) + "\n")
