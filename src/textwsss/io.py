"""Atomic file output: every stage writes to a temporary name and renames, so an interrupted
stage never leaves a half-written file that DVC could cache.

Files get the mode `open()` would give them (0666 less the umask: 0644 under umask 022), not the 0600 of
the temporary file, so a group sharing a results folder can read them.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from .data.classes import PALETTE


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from open(): 0o666 less the process umask."""
    return 0o666 & ~_umask()


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
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary folder beside `path`; on success it replaces the folder `path`, on error it is
    removed, so a reader finds the old folder, or none, or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def save_torch(path: str | os.PathLike, obj) -> None:
    """torch.save, atomically, through a file object: torch names the archive's inner folder after the file
    it writes to, and the temporary name is random; through a file object the folder is always 'archive',
    so equal objects give equal bytes and a rerun with the same seed gives the same DVC hashes."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def label_png_bytes(labels: np.ndarray) -> bytes:
    """A label map (H, W) uint8 as a palette PNG (the VOC colour map, which has a colour for every label)."""
    im = Image.fromarray(np.asarray(labels, dtype=np.uint8), mode="P")
    im.putpalette(PALETTE.reshape(-1).tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def save_label_png(path: str | os.PathLike, labels: np.ndarray) -> None:
    write_bytes(path, label_png_bytes(labels))


def npz_bytes(**arrays) -> bytes:
    """np.savez_compressed in memory: the bytes a file would get (a resumable folder hashes them as it writes)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def save_npz(path: str | os.PathLike, **arrays) -> None:
    write_bytes(path, npz_bytes(**arrays))


def save_figure(path: str | os.PathLike, fig) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=100, bbox_inches="tight")


def save_overlay(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray, alpha: float = 0.6,
                 rows_per_band: int = 512) -> None:
    """JPEG of the label colours blended over the image (ignored pixels white), built a band of rows at a time
    so that a large photo costs little more than its own pixels."""
    out = np.empty_like(image)
    for top in range(0, image.shape[0], rows_per_band):
        lab = labels[top:top + rows_per_band]
        colours = PALETTE[lab]
        colours[lab == 255] = 255
        band = image[top:top + rows_per_band].astype(np.float32) * (1 - alpha) + colours * alpha
        out[top:top + rows_per_band] = band.astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(out).save(tmp, format="JPEG", quality=90)
