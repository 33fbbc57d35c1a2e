"""Output folders of one file per image that survive an interrupted run.

dvc.yaml declares them `persist: true`, so DVC leaves them in place when a killed stage is rerun. The folder
holds a stamp of everything its files depend on (model, params, dataset); a run with another stamp starts from
an empty folder, a run with the same stamp skips the images already written. Every file is written under a
temporary name and renamed, so a file that exists is complete, and a resumed run ends with the same bytes as an
uninterrupted one. Files of ids no longer listed are removed at the end.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Iterable

from ..data.filecache import file_md5
from ..io import write_json

log = logging.getLogger(__name__)

STAMP = ".stamp.json"


def stamp_of(config: dict, files: Iterable[Path] = ()) -> dict:
    """What a folder's files depend on: a params dict and the content hashes of input files (by name)."""
    return {"config": json.loads(json.dumps(config, sort_keys=True, default=str)),
            "inputs": {Path(f).name: file_md5(f) for f in files}}


class ResumableFolder:
    def __init__(self, folder: Path, stamp: dict, suffix: str):
        self.folder, self.stamp, self.suffix = Path(folder), stamp, suffix

    def path(self, image_id: str) -> Path:
        return self.folder / f"{image_id}{self.suffix}"

    def open(self, main: bool = True) -> int:
        """Keeps the folder if its stamp matches (returns how many files it holds), else empties it. Only the
        main process of a multi-process run changes the folder."""
        stamp_file = self.folder / STAMP
        current = None
        if stamp_file.is_file():
            try:
                current = json.loads(stamp_file.read_text())
            except ValueError:
                current = None
        if current == self.stamp:
            kept = sum(1 for _ in self.folder.rglob(f"*{self.suffix}"))
            if kept:
                log.info("%s: resuming; %d files of an interrupted run with the same inputs are kept", self.folder,
                         kept)
            return kept
        if main:
            if self.folder.exists():
                shutil.rmtree(self.folder)
            write_json(stamp_file, self.stamp)
        return 0

    def done(self, image_id: str) -> bool:
        return self.path(image_id).is_file()

    def finish(self, ids: Iterable[str]) -> None:
        """Removes files of ids not in `ids` and temporary files an interrupted run left."""
        keep = {self.path(i) for i in ids} | {self.folder / STAMP}
        for f in list(self.folder.rglob("*")):
            if f.is_file() and f not in keep:
                f.unlink()


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
