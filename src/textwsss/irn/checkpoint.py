"""A published IRN relation network (res50_irn.pth of jiwoon-ahn/irn or CLIMS) in our BoundaryNet.

IRN's step/train_irn.py saves the state dict of net/resnet50_irn.py's AffinityDisplacement:
- `resnet50.*`: the backbone (conv1, bn1, layer1..4: torchvision's names), registered a second time as
  `stage1..5.*` and a third time as `backbone.0..4.*` (nn.Sequential / nn.ModuleList views of the same modules);
- `fc_edge1..5.{0,1}.*`: each level's 1x1 conv (no bias) and GroupNorm(4, 32); `fc_edge6.*`: the fusing conv;
  the same modules again as `edge_layers.0..5.*`;
- `fc_dp1..7.*` / `dp_layers.*`: the displacement branch (instance segmentation; not part of BoundaryNet);
- `path_indices<k>`, `ind_from`, `ind_to`: the pair index of its training crop, stored as parameters.

Ours: `backbone.*` (the same torchvision names), `reduce.<k>.{0,1}.*` for fc_edge<k+1>, `fuse.*` for fc_edge6, and
`normalize.*` (the input normalisation buffers; IRN normalises in its data pipeline with the same ImageNet mean
and standard deviation). Strict: every key of the file is mapped or is one of the duplicates / displacement /
index entries listed above, and every weight of the model is given, with its shape.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..models.checkpoints import map_state_strictly
from .boundary_net import BoundaryNet

#: Entries of res50_irn.pth that BoundaryNet has no use for (module docstring).
_DROPPED = re.compile(r"^(stage[1-5]|backbone|edge_layers|fc_dp[1-7]|dp_layers)\.|^(path_indices\d+|ind_from|ind_to)$")
_EDGE = re.compile(r"^fc_edge([1-5])\.([01])\.(.+)$")


def irn_key(name: str) -> str | None:
    """The res50_irn.pth key of one of our BoundaryNet's state-dict names (None for the normalisation buffers)."""
    if name.startswith("backbone."):
        return "resnet50." + name[len("backbone."):]
    m = re.match(r"^reduce\.(\d+)\.([01])\.(.+)$", name)
    if m:
        return f"fc_edge{int(m.group(1)) + 1}.{m.group(2)}.{m.group(3)}"
    if name.startswith("fuse."):
        return "fc_edge6." + name[len("fuse."):]
    return None


def _our_name(key: str) -> str | None:
    if key.startswith("resnet50."):
        return "backbone." + key[len("resnet50."):]
    m = _EDGE.match(key)
    if m:
        return f"reduce.{int(m.group(1)) - 1}.{m.group(2)}.{m.group(3)}"
    if key.startswith("fc_edge6."):
        return "fuse." + key[len("fc_edge6."):]
    return None


def irn_to_ours(state: dict, model: BoundaryNet, path: Path | str = "<state dict>") -> dict:
    """res50_irn.pth's state dict in `model`'s names; ValueError listing the problems when it does not fit."""
    return map_state_strictly(state, model, path, _our_name, skip=lambda key: bool(_DROPPED.match(key)),
                              original=irn_key, network="relation network", file_kind="res50_irn.pth")


def load_irn_weights(model: BoundaryNet, path: str | Path) -> str:
    """Loads, strictly, a relation network's weights into `model` from one of our model.pt files (same spec) or
    from IRN's res50_irn.pth (irn_to_ours). Returns which format it was ('textwsss' or 'irn')."""
    from ..models.checkpoints import FORMAT

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: relation network checkpoint not found (params train_irn.init_checkpoint)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for a damaged file
        raise ValueError(f"{path}: not a readable checkpoint ({err})") from err
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        if raw["spec"] != model.spec:
            raise ValueError(f"{path}: a {raw['spec']} network, expected {model.spec}")
        model.load_state_dict(raw["state_dict"])
        return "textwsss"
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ValueError(f"{path}: neither a textwsss model.pt nor a state dict")
    mapped = irn_to_ours(raw, model, path)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.startswith("normalize.")]
    if missing or unexpected:  # cannot happen after the mapping's own checks; kept as the strict guarantee
        raise ValueError(f"{path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return "irn"
