"""The content digest of what a torch file holds: training checkpoints (training/loop.py) and model files
(models/checkpoints.py) store it beside their content and check it when read, because torch.load of a file
with a flipped byte inside a tensor's storage succeeds and silently returns other weights (the zip archive
keeps no checksum that torch verifies)."""
from __future__ import annotations

import hashlib

import numpy as np
import torch


def content_digest(obj) -> str:
    """sha256 of a checkpoint's content: every tensor's dtype, shape and bytes and every other value's repr, in
    the order of the (nested) dicts and lists. Equal content gives an equal digest on any machine."""
    h = hashlib.sha256()

    def walk(x) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, np.ndarray):
            h.update(f"A{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            h.update(f"D{len(x)}".encode())
            for k, v in x.items():
                h.update(repr(k).encode())
                walk(v)
        elif isinstance(x, (list, tuple)):
            h.update(f"L{len(x)}".encode())
            for v in x:
                walk(v)
        elif isinstance(x, (set, frozenset)):
            # a set's repr follows string hashing, which differs between processes (PYTHONHASHSEED)
            h.update(f"S{len(x)}".encode())
            for v in sorted(x, key=repr):
                walk(v)
        else:
            h.update(repr(x).encode())

    walk(obj)
    return h.hexdigest()
