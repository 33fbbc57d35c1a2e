"""prepare: read the dataset in its layout, check every file, and write the prepared view the other stages read.

Every listed id is checked (images fully decoded, masks against their image and the class list, tags
against the class list, split lists for duplicates, overlaps and missing files) before anything is
written, and all problems are reported together, each naming the file and what is wrong, so a user fixes a
broken dataset in one pass.

The data lives outside the repository, where DVC cannot follow it into `dvc exp` workspaces; instead this
stage runs on every `dvc repro` (`always_changed` in dvc.yaml) and writes the content hash of every data file
into data/prepared/dataset.json. Unchanged data gives a byte-identical output, so nothing after it reruns;
changed data changes the file and reruns what depends on it. Files already checked are remembered by size
and mtime (data/.cache), so a rerun on unchanged data reads no pixels.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..data.dataset import check_scan
from ..data.filecache import FileCache
from ..data.layouts import scan
from ..data.prepared import PREPARED_MASKS, prepared_content
from ..io import atomic_dir, save_label_png, write_json
from .workspace import Workspace

log = logging.getLogger(__name__)


def prepare_dataset(data, out_dir: Path, cache_file: Path | None = None,
                    roles: tuple[str, ...] = ("train", "val")) -> dict:
    """Checks the dataset of params `data` and writes out_dir/dataset.json (and rasterised masks); raises
    DataError listing every problem, leaving out_dir as it was. Returns dataset.json's content. `roles`: the
    splits to read (('val',) for `textwsss evaluate`)."""
    root = data.root_path()
    found = scan(data, root, roles)
    cache = FileCache(cache_file)
    with atomic_dir(out_dir) as tmp:
        made: list[str] = []

        def keep_mask(image_id, mask):
            save_label_png(tmp / "masks" / f"{image_id}.png", mask)
            made.append(image_id)

        checked = check_scan(found, cache=cache, on_mask=keep_mask)
        masks = {i: p.relative_to(root).as_posix() for i, p in found.masks.items()}
        masks.update({i: f"{PREPARED_MASKS}masks/{i}.png" for i in made})
        splits = {"train": found.splits.get("train", []), "val": found.splits.get("val", [])}
        splits["score"] = [i for i in found.splits.get("score", splits["train"]) if i in masks]
        files = [*found.images.values(), *found.masks.values(), *found.sources]
        manifest = {Path(f).relative_to(root).as_posix(): cache.md5(Path(f)) for f in dict.fromkeys(files)}
        content = prepared_content(found.layout, root, found.classes, splits, found.images, masks, checked.labels,
                                   manifest)
        write_json(tmp / "dataset.json", content)
    cache.save()
    for role, ids in splits.items():
        log.info("%s: %d images, %d with a mask", role, len(ids), sum(i in masks for i in ids))
    return content


def run(params, ws: Workspace) -> None:
    prepare_dataset(params.data, ws.prepared, ws.cache / "prepare.json")
