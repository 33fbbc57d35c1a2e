"""Facts about data files (content hash, image size, mask values) remembered by path, size and mtime.

prepare re-checks the data on every `dvc repro` (the data lives outside the repository, so DVC cannot hash it
itself, see pipeline/prepare.py); with this cache a rerun on unchanged data decodes and hashes nothing.
A file whose size or mtime changed is read again, so the cache can never hide a change of content.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


def file_md5(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class FileCache:
    """A JSON file of {path: {"stat": [size, mtime_ns], kind: value}}; `path=None` keeps it in memory only."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                log.warning("%s: unreadable file cache, starting afresh", self.path)
        self.dirty = False

    def _entry(self, path: Path) -> dict | None:
        try:
            st = os.stat(path)
        except OSError:
            return None  # missing: the caller's check reports it
        key = str(Path(path).resolve())
        stat = [st.st_size, st.st_mtime_ns]
        entry = self.entries.get(key)
        if entry is None or entry.get("stat") != stat:
            entry = {"stat": stat}
            self.entries[key] = entry
        return entry

    def _get(self, path: Path, kind: str, compute: Callable):
        entry = self._entry(path)
        if entry is None:
            return compute(path)
        if kind not in entry:
            entry[kind] = compute(path)
            self.dirty = True
        return entry[kind]

    def md5(self, path: Path) -> str:
        return self._get(path, "md5", file_md5)

    def image(self, path: Path, check: Callable) -> tuple:
        """check(path) -> ((h, w) or None, problem or None); only clean results are remembered."""
        entry = self._entry(path)
        if entry is not None and "image" in entry:
            return tuple(entry["image"]), None
        size, problem = check(path)
        if entry is not None and problem is None:
            entry["image"] = list(size)
            self.dirty = True
        return size, problem

    def mask(self, path: Path, read: Callable) -> tuple:
        """read(path) -> (facts or None, problem or None); only readable masks are remembered."""
        entry = self._entry(path)
        if entry is not None and "mask" in entry:
            return entry["mask"], None
        facts, problem = read(path)
        if entry is not None and problem is None:
            entry["mask"] = facts
            self.dirty = True
        return facts, problem

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        from ..io import write_text

        write_text(self.path, json.dumps(self.entries))
        self.dirty = False
