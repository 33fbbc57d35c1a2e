"""Atomic file output: every stage writes to a temporary name and renames, so an interrupted
stage never leaves a half-written file that DVC could cache."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from .voc import PALETTE


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_torch(path: str | os.PathLike, obj) -> None:
    """torch.save, atomically, through a file object: torch names the archive's inner folder after the file
    it writes to, and the temporary name is random; through a file object the folder is always 'archive',
    so equal objects give equal bytes and a rerun with the same seed gives the same DVC hashes."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_label_png(path: str | os.PathLike, labels: np.ndarray) -> None:
    """A label map (H, W) uint8 as a palette PNG with the VOC colours."""
    im = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    im.putpalette(PALETTE.reshape(-1).tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def save_npz(path: str | os.PathLike, **arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def save_figure(path: str | os.PathLike, fig) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=100, bbox_inches="tight")
