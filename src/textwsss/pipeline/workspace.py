"""Where the stages read and write, below the repository root; dvc.yaml declares the same paths."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.prepared import PreparedDataset, read_prepared


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    def model_dir(self, stage: str) -> Path:
        """data/<stage>/ of a training stage: model.pt and its resumable checkpoint.pt."""
        return self.root / "data" / stage

    @property
    def cams(self) -> Path:
        return self.root / "data" / "cams"

    @property
    def pseudo_labels(self) -> Path:
        return self.root / "data" / "pseudo_labels"

    @property
    def tas(self) -> Path:
        return self.root / "data" / "tas"

    @property
    def cache(self) -> Path:
        """Facts about data files that prepare remembers between runs (not a DVC output)."""
        return self.root / "data" / ".cache"

    @property
    def metrics(self) -> Path:
        return self.root / "reports" / "metrics"

    @property
    def plots(self) -> Path:
        return self.root / "reports" / "plots"

    def figures(self, stage: str) -> Path:
        return self.root / "reports" / "figures" / stage

    def logs(self, stage: str) -> Path:
        """dvclive folder of a training stage."""
        return self.root / "reports" / stage

    def dataset(self, params) -> PreparedDataset:
        return read_prepared(self.prepared, params.data.root_path())
