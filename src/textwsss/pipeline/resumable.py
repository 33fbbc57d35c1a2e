"""Output folders of one file per image that survive an interrupted run, and that know what they hold.

dvc.yaml declares them `persist: true`, so DVC leaves them in place when a killed stage is rerun. The folder
holds a stamp of everything its files depend on (model, params, dataset); a run with another stamp starts from
an empty folder, a run with the same stamp keeps the images already written. Every file is written under a
temporary name and renamed, so a file that exists is complete, and a resumed run ends with the same bytes as an
uninterrupted one.

A file that exists is not trusted for that alone (a failed copy, a full disk outside our writes, an edit or a
damaged `dvc pull` leave complete-looking files): the folder keeps a manifest of each file's size and md5,
taken from the bytes as they are written (no re-read). Each writing process appends to its own journal
(`.journal.<pid>.jsonl`), so parallel writers never share a file; `finish` folds the journals into
`.manifest.json` (sorted, no timestamps or pids: it is part of the DVC output and must not change between
equal runs). On resume every kept file is checked against the manifest, its size first and then its hash; a
file that is missing, unlisted or different is removed, with one log line saying why, and computed again. A
file may also record the hash of the input it was made from (`source`: a pseudo-label records its CAM file's),
so a recomputed input recomputes its outputs and nothing else.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping

from ..data.filecache import file_md5
from ..io import write_bytes, write_json, write_text

log = logging.getLogger(__name__)

STAMP = ".stamp.json"
MANIFEST = ".manifest.json"
JOURNAL = ".journal."  # + pid + .jsonl
#: Part of every stamp: a folder written before manifests existed is started afresh, not half-trusted.
FORMAT = "resumable-2"
#: Files named one by one when a folder is checked; beyond that, a count (a lost manifest lists every file).
_NAMED = 20


def stamp_of(config: dict, files: Iterable[Path] = ()) -> dict:
    """What a folder's files depend on: a params dict and the content hashes of input files (by name)."""
    return {"config": json.loads(json.dumps(config, sort_keys=True, default=str)),
            "inputs": {Path(f).name: file_md5(f) for f in files}}


def read_manifest(folder: Path) -> dict[str, list]:
    """{file name relative to the folder: [size, md5] or [size, md5, source md5]} of a finished folder.
    Raises ValueError naming the file when it is missing or unreadable."""
    path = Path(folder) / MANIFEST
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: no readable manifest of the folder's files ({err})") from err
    if not isinstance(files, dict):
        raise ValueError(f"{path}: 'files' must be a mapping of file names, got {type(files).__name__}")
    return files


def _read_journal(path: Path) -> dict[str, list]:
    entries = {}
    for line in path.read_text().splitlines():
        try:
            name, *entry = json.loads(line)
        except ValueError:
            continue  # the last line of a process killed while appending it; that file counts as unlisted
        entries[name] = entry
    return entries


class ResumableFolder:
    def __init__(self, folder: Path, stamp: dict, suffix: str):
        self.folder, self.suffix = Path(folder), suffix
        self.stamp = {"format": FORMAT, **stamp}
        self.entries: dict[str, list] = {}
        self._journal = None

    def path(self, image_id: str) -> Path:
        return self.folder / f"{image_id}{self.suffix}"

    def _name(self, image_id: str) -> str:
        return f"{image_id}{self.suffix}"

    def open(self, main: bool = True, sources: Mapping[str, str] | None = None) -> int:
        """Keeps the folder if its stamp matches, every file in it checked against the manifest (returns how many
        it keeps), else empties it. `sources`: {image id: hash of the input its file must have been made from}; a
        file made from another input is recomputed. Only the main process of a multi-process run changes the
        folder (the others wait for it)."""
        if not main:
            return 0
        stamp_file = self.folder / STAMP
        current = None
        if stamp_file.is_file():
            try:
                current = json.loads(stamp_file.read_text())
            except ValueError:
                current = None
        if current != self.stamp:
            if self.folder.exists():
                if current is not None:
                    log.info("%s: made with other inputs or params; starting an empty folder", self.folder)
                shutil.rmtree(self.folder)
            write_json(stamp_file, self.stamp)
            self.entries = {}
            return 0
        self.entries = self._recorded()
        self._verify(sources or {})
        self._write_manifest()
        if self.entries:
            log.info("%s: resuming; %d files of an interrupted run with the same inputs are kept (each checked "
                     "against the manifest)", self.folder, len(self.entries))
        return len(self.entries)

    def _journals(self) -> list[Path]:
        return sorted(self.folder.glob(f"{JOURNAL}*.jsonl"))

    def _recorded(self) -> dict[str, list]:
        """The manifest of the last finished run and the journals of any run after it."""
        entries: dict[str, list] = {}
        if (self.folder / MANIFEST).exists():
            try:
                entries = read_manifest(self.folder)
            except ValueError as err:
                log.warning("%s; every file in the folder is recomputed", err)
        for journal in self._journals():
            entries.update(_read_journal(journal))
        return entries

    def _verify(self, sources: Mapping[str, str]) -> None:
        """Removes every file that does not match its record (and the records of files that are gone)."""
        own = {STAMP, MANIFEST} | {j.name for j in self._journals()}
        problems: list[tuple[str, str]] = []
        found = set()
        for f in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            name = f.relative_to(self.folder).as_posix()
            if name in own:
                continue
            reason = self._problem(f, name, sources)
            if reason is None:
                found.add(name)
            else:
                problems.append((name, reason))
                f.unlink()
        removed = {n for n, _ in problems}
        problems += [(n, "missing") for n in sorted(set(self.entries) - found - removed)]
        self.entries = {n: e for n, e in self.entries.items() if n in found}
        for name, reason in problems[:_NAMED]:
            log.warning("%s: %s; %s", self.folder / name, reason,
                        "removed" if reason.startswith(("not written", "left by")) else "recomputed")
        if len(problems) > _NAMED:
            log.warning("%s: %d more files removed or recomputed for the same reasons", self.folder,
                        len(problems) - _NAMED)

    def _problem(self, f: Path, name: str, sources: Mapping[str, str]) -> str | None:
        entry = self.entries.get(name)
        if entry is None:
            if f.name.startswith(".") and ".tmp" in f.name:
                return "left by an interrupted write"
            return "not written by this stage (not in its manifest)"
        size, md5 = entry[0], entry[1]
        actual = f.stat().st_size
        if actual != size:
            return f"size {actual} bytes, the manifest says {size}"
        if file_md5(f) != md5:
            return "content differs from the manifest's hash"
        if name.endswith(self.suffix) and sources:
            expected = sources.get(name[:-len(self.suffix)])
            recorded = entry[2] if len(entry) > 2 else None
            if expected is not None and recorded != expected:
                return "made from an input that has changed since"
        return None

    def done(self, image_id: str) -> bool:
        return self.path(image_id).is_file()

    def write(self, image_id: str, data: bytes, source: str | None = None) -> None:
        """Writes one image's file atomically and records its size and hash (and the hash of its input)."""
        write_bytes(self.path(image_id), data)
        self.record(image_id, len(data), hashlib.md5(data).hexdigest(), source)

    def record(self, image_id: str, size: int, md5: str, source: str | None = None) -> None:
        """Records a file already renamed into place (by a worker process, which returns its size and hash)."""
        entry = [size, md5] if source is None else [size, md5, source]
        name = self._name(image_id)
        self.entries[name] = entry
        if self._journal is None:
            # line-buffered: each record reaches the OS as it is made, so a killed process loses at most the
            # line it was writing, and that file is then unlisted and recomputed
            self._journal = open(self.folder / f"{JOURNAL}{os.getpid()}.jsonl", "a", buffering=1)
        self._journal.write(json.dumps([name, *entry]) + "\n")

    def finish(self, ids: Iterable[str]) -> None:
        """Removes files of ids not in `ids` and temporary files an interrupted run left, and writes the
        manifest of the rest (every process's journal folded in). Every id must have its file by now."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        for journal in self._journals():
            self.entries.update(_read_journal(journal))
        wanted = {self._name(i) for i in ids}
        unrecorded = sorted(n for n in wanted if n not in self.entries or not (self.folder / n).is_file())
        if unrecorded:
            raise RuntimeError(f"{self.folder}: {len(unrecorded)} files were not written or not recorded: "
                               f"{', '.join(unrecorded[:10])}")
        own = {STAMP, MANIFEST}
        for f in list(self.folder.rglob("*")):
            name = f.relative_to(self.folder).as_posix()
            if f.is_file() and name not in wanted and name not in own and not name.startswith(JOURNAL):
                f.unlink()
        self.entries = {n: e for n, e in self.entries.items() if n in wanted}
        self._write_manifest()

    def _write_manifest(self) -> None:
        """The manifest replaces the journals: written first, so a kill in between leaves both, which agree."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        files = {n: self.entries[n] for n in sorted(self.entries)}
        write_text(self.folder / MANIFEST, '{"files": {\n' + ",\n".join(
            f"{json.dumps(n)}: {json.dumps(e)}" for n, e in files.items()) + "\n}}\n")
        for journal in self._journals():
            journal.unlink()


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
