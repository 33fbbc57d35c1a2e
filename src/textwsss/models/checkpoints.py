"""Trained-model files: weights, the spec that rebuilds the architecture, and the class list, so a checkpoint
is usable without params.yaml or the dataset it was trained on (`textwsss predict` reads all it needs here).
A segmentation model also carries its evaluation record (evaluation.py: eval_seg's inference options and the
tuned class gate), so its score needs nothing else either.

Each file also records the content digest of what it holds (digest.py); reading checks it, because torch.load
returns other weights without a word when a byte of a tensor's storage has changed. Files written before the
digest existed have none and load as they are."""
from __future__ import annotations

from pathlib import Path

import torch

from ..data.classes import ClassList
from ..io import save_torch
from .digest import content_digest
from .runtime import place

FORMAT = "textwsss-model-2"


def save_model(path: str | Path, model: torch.nn.Module, classes: ClassList, *, evaluation: dict | None = None,
               **meta) -> None:
    """evaluation: what the score depends on besides the weights (evaluation.py's record); stored only when given,
    so a checkpoint without it is recognisably one written before it existed."""
    state = {"format": FORMAT, "spec": model.spec, "classes": classes.to_json(), "state_dict": model.state_dict(),
             "meta": meta}
    if evaluation is not None:
        state["evaluation"] = evaluation
    save_torch(path, {**state, "digest": content_digest(state)})


def _verified(state: dict, path: Path) -> dict:
    """`state` without its digest, after checking the digest where the file has one."""
    if "digest" not in state:
        return state  # written before model files carried a digest
    state = dict(state)
    digest = state.pop("digest")
    if content_digest(state) != digest:
        raise ValueError(f"{path}: damaged: content does not match its recorded digest (a changed byte of the "
                         f"file; torch would read other weights from it)")
    return state


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise ValueError(f"{path}: not a textwsss model checkpoint of format {FORMAT!r} (found {found!r}); "
                         f"retrain it with this version (dvc repro)")
    return _verified(state, path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode on `device`, meta). The model's `classes` attribute is its ClassList."""
    model, state = load_model_state(path, device)
    return model, state.get("meta", {})


def load_model_state(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode on `device`, the checkpoint's other entries: spec, meta, evaluation record, ...)."""
    from .factory import build_model

    state = read_checkpoint(path)
    model = build_model(state["spec"])
    model.load_state_dict(state["state_dict"])
    model.classes = ClassList.from_json(state["classes"])
    return place(model, device).eval(), {k: v for k, v in state.items() if k != "state_dict"}


def map_state_strictly(state: dict, model: torch.nn.Module, path: Path | str, rename, *, skip, original,
                       network: str, file_kind: str) -> dict:
    """A published state dict in `model`'s names, strictly: every key is renamed (`rename(key)` -> our name, or
    None) or is a known extra (`skip(key)`), and every weight of the model is given; otherwise a ValueError
    naming the file and listing the problems (`original(name)`: the file's key for one of ours)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel
    ours = model.state_dict()
    mapped, problems = {}, []
    for key, value in state.items():
        name = rename(key)
        if name is None:
            if not skip(key):
                problems.append(f"unexpected key {key!r}")
            continue
        if name not in ours:
            problems.append(f"key {key!r} has no counterpart {name!r} in the {model.spec['backbone']} {network}")
        elif tuple(ours[name].shape) != tuple(value.shape):
            problems.append(f"{key!r}: shape {tuple(value.shape)}, the {network}'s {name!r} has "
                            f"{tuple(ours[name].shape)}")
        else:
            mapped[name] = value
    for name, value in ours.items():
        if name in mapped or name.startswith("normalize."):
            continue
        if name.endswith("num_batches_tracked"):
            mapped[name] = value  # absent from checkpoints of old BatchNorm versions; unused by the forward pass
        else:
            problems.append(f"missing {name!r} (IRN key {original(name)!r})")
    if problems:
        raise ValueError(f"{path}: not an IRN {file_kind} for this {network} ({len(problems)} problem(s)): "
                         + "; ".join(problems[:8]))
    return mapped


def _irn_cam_name(key: str) -> str | None:
    if key.startswith("resnet50."):
        return "backbone." + key[len("resnet50."):]
    return key if key == "classifier.weight" else None


def _irn_cam_key(name: str) -> str:
    return "resnet50." + name[len("backbone."):] if name.startswith("backbone.") else name


def _irn_to_ours(state: dict, model: torch.nn.Module, path: Path) -> dict:
    """IRN's res50_cam.pth (net/resnet50_cam.py: `resnet50.*`, the same modules again as `stage1..4.*`, and
    `classifier.weight`) in our CAMNet's names (`backbone.*`, `classifier.weight`). Strict: every key must be
    used or be one of IRN's duplicates, and every weight of the model must be given."""
    # IRN registers the resnet50 modules a second time as stages; the resnet50.* copy is used
    return map_state_strictly(state, model, path, _irn_cam_name,
                              skip=lambda key: key.split(".")[0] in ("stage1", "stage2", "stage3", "stage4"),
                              original=_irn_cam_key, network="CAM network", file_kind="res50_cam.pth")


def load_cam_weights(model: torch.nn.Module, path: str | Path) -> str:
    """Loads, strictly, a CAM network's weights into `model` from one of our model.pt files (same architecture)
    or from IRN's res50_cam.pth (the baseline CLIMS fine-tunes; key mapping in _irn_to_ours). Returns which
    format it was."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CAM checkpoint not found (params cam.init_checkpoint)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from err
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        raw = _verified(raw, path)
        if raw["spec"] != model.spec:
            raise ValueError(f"{path}: a {raw['spec']} network, expected {model.spec}")
        model.load_state_dict(raw["state_dict"])
        return "textwsss"
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path}: neither a textwsss model.pt nor a state dict")
    mapped = _irn_to_ours(raw, model, path)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.startswith("normalize.")]
    if missing or unexpected:  # cannot happen after the mapping's own checks; kept as the strict guarantee
        raise ValueError(f"{path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return "irn"
