"""Fingerprints of a training run's inputs: a checkpoint is resumed only by the run it belongs to."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable


def fingerprint(config: dict, files: Iterable[Path] = ()) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for f in sorted(Path(p) for p in files):
        h.update(f.name.encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]
