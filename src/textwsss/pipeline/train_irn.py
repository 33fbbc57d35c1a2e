"""train_irn: IRN's relation network (the boundary branch, irn/boundary_net.py) on the CAM network's backbone,
trained on random crops of the train images with their CRF seeds (data/pseudo_labels: 0 background, 1..K
classes, 255 unconfident), as IRN's step/train_irn.py trains it on its ir_label seeds.

The backbone takes train_cam's weights and stays frozen (weights and BatchNorm statistics), as IRN freezes its
ResNet-50; only the edge layers learn. With params train_irn.init_checkpoint it trains nothing and takes that
file instead (IRN's res50_irn.pth, its key names mapped, or one of our model.pt files; loaded strictly)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..data.training_sets import SegmentationDataset
from ..irn.checkpoint import load_irn_weights
from ..irn.step import RelationCrops, irn_step
from ..models.checkpoints import read_checkpoint, save_model
from ..models.factory import build_boundary_net
from ..params import project_root, resolve_device
from ..training.fingerprint import fingerprint
from ..training.launch import is_main_process
from ..training.loop import fit, seed_everything, train_config
from .workspace import Workspace, stage_output

log = logging.getLogger(__name__)

#: The params train_irn's weights depend on (the CAM network's architecture keys, not how it was trained).
CAM_KEYS = ("backbone", "output_stride", "dilate")


def relation_network(params):
    """The BoundaryNet of params `cam` (the CAM network's backbone) and `train_irn`, with random weights."""
    c = params.cam
    return build_boundary_net(backbone=c.backbone, pretrained="none", output_stride=c.output_stride,
                              dilate=c.dilate, width=params.train_irn.width)


def init_backbone_from_cam(model, cam_file: Path) -> None:
    """The relation network's backbone takes the CAM network's weights (and BatchNorm statistics): IRN's edge
    branch reads the features of the network whose CAMs the random walk propagates."""
    state = read_checkpoint(cam_file)
    spec = state["spec"]
    mine = {k: model.spec[k] for k in CAM_KEYS}
    theirs = {k: spec.get(k) for k in CAM_KEYS}
    if spec.get("type") != "cam_net" or theirs != mine:
        raise ValueError(f"{cam_file}: a {spec.get('type')} network with {theirs}; the relation network needs the "
                         f"CAM network of params cam ({mine})")
    weights = {k[len("backbone."):]: v for k, v in state["state_dict"].items() if k.startswith("backbone.")}
    model.backbone.load_state_dict(weights)


def run_config(params) -> dict:
    """What the trained weights depend on: the fingerprint of the run and the record in model.pt."""
    config = params.model_dump(include={"seed", "device", "train_irn"})
    config["cam"] = {k: getattr(params.cam, k) for k in CAM_KEYS}
    return config


def run(params, ws: Workspace) -> None:
    cfg = params.train_irn
    device = resolve_device(params.device)
    seed_everything(params.seed)
    data = ws.dataset(params)
    classes = data.classes
    model = relation_network(params)
    out = ws.model_dir("train_irn")
    config = run_config(params)
    if cfg.init_checkpoint:
        path = Path(cfg.init_checkpoint).expanduser()
        path = path if path.is_absolute() else project_root() / path
        kind = load_irn_weights(model, path)
        save_model(out / "model.pt", model, classes, stage="train_irn", source=str(path), format=kind,
                   params=config)
        log.info("relation network taken from %s (%s format), nothing trained", path, kind)
        return
    cam_file = ws.model_file("train_cam")
    with stage_output("train_cam", cam_file):
        init_backbone_from_cam(model, cam_file)
    log.info("relation network on the frozen backbone of the CAM network %s", cam_file)
    ids = data.ids("train")
    seeds = {i: ws.pseudo_labels / f"{i}.png" for i in ids}
    with stage_output("pseudo_labels", ws.pseudo_labels):
        crops = SegmentationDataset(data, ids, seeds, crop=cfg.crop_size, scale_range=tuple(cfg.scale_range),
                                    flip=cfg.flip, interpolation=cfg.interpolation, pad=cfg.crop_pad)
    dataset = RelationCrops(crops, radius=cfg.radius, num_labels=classes.num_labels)
    train_cfg = train_config(cfg, seed=params.seed, device=device, workers=params.data.workers,
                             checkpoint=out / "checkpoint.pt", live_dir=ws.logs("train_irn"),
                             fingerprint=fingerprint(config, [*seeds.values(), cam_file]))
    start = time.perf_counter()
    fit(model, dataset, irn_step(cfg.radius), model.param_groups(), train_cfg, desc="train_irn")
    if is_main_process():
        save_model(out / "model.pt", model.cpu(), classes, stage="train_irn", params=config)
        log.info("relation network written to %s (%.1f s)", out / "model.pt", time.perf_counter() - start)
