"""Timing shared by the benchmark scripts."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch


def best_time(fn: Callable[[], object], repeats: int, device: torch.device | str = "cpu") -> tuple[object, float]:
    """The result of fn and its fastest wall time over `repeats` runs (the machine is shared); on CUDA the
    device is synchronised around each run so queued kernels are counted."""
    cuda = torch.device(device).type == "cuda"
    best, result = float("inf"), None
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return result, best
