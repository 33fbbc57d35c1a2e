"""Where the stages read and write, below the repository root; dvc.yaml declares the same paths."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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

    def model_file(self, stage: str) -> Path:
        """data/<stage>/model.pt: the trained model a training stage hands to the stages after it."""
        return self.model_dir(stage) / "model.pt"

    def load_stage_model(self, stage: str, device="cpu"):
        """(model, meta) of models.checkpoints.load_model from the model file of `stage`; a missing or damaged
        file is an error that names it, the stage that makes it, and how to make it again."""
        from ..models.checkpoints import load_model

        with stage_output(stage, self.model_file(stage)):
            return load_model(self.model_file(stage), device)

    def read_stage_checkpoint(self, stage: str) -> dict:
        """models.checkpoints.read_checkpoint of the model file of `stage`, with the errors of load_stage_model."""
        from ..models.checkpoints import read_checkpoint

        with stage_output(stage, self.model_file(stage)):
            return read_checkpoint(self.model_file(stage))

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


@contextlib.contextmanager
def stage_output(stage: str, path: Path) -> Iterator[None]:
    """Turns the error of reading another stage's output file into one that says which stage makes it and how
    to make it again (the file itself is only a product of that stage: rebuilding it is always safe)."""
    try:
        yield
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path} is missing: it is the output of the {stage} stage; make it with "
                                f"`dvc repro {stage}` (or `dvc pull {stage}`)") from err
    except (ValueError, KeyError) as err:  # KeyError: a readable file that lacks what a model file holds
        raise ValueError(f"{path}, the output of the {stage} stage, is damaged or unusable ({err}); make it "
                         f"again with `dvc repro -s -f {stage}` (a training stage resumes its checkpoint), or "
                         f"delete it and run `dvc repro`") from err
