"""Trained-model files: weights plus the spec that rebuilds the architecture (type, backbone, classes,
normalisation buffers travel in the state dict), so a checkpoint is usable without params.yaml."""
from __future__ import annotations

from pathlib import Path

import torch

from .io import save_torch
from .models.runtime import place

FORMAT = "textwsss-model-1"


def save_model(path: str | Path, model: torch.nn.Module, **meta) -> None:
    save_torch(path, {"format": FORMAT, "spec": model.spec, "state_dict": model.state_dict(), "meta": meta})


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    from .models.factory import build_model

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a textwsss model checkpoint (expected format {FORMAT!r})")
    model = build_model(state["spec"])
    model.load_state_dict(state["state_dict"])
    return place(model, device).eval(), state.get("meta", {})
