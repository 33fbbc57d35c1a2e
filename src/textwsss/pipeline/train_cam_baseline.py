"""train_cam_baseline: the multi-label soft-margin (BCE) CAM network that CLIMS fine-tunes (as the official
train_clims.py starts from IRN's res50_cam.pth). With params cam.init_checkpoint it trains nothing and takes
that checkpoint instead (IRN's res50_cam.pth or one of our model.pt files, loaded strictly)."""
from __future__ import annotations

import logging
from pathlib import Path

from ..data.training_sets import ClassificationDataset
from ..models.checkpoints import load_cam_weights, save_model
from ..models.factory import build_cam_net
from ..params import project_root, resolve_device
from ..training.fingerprint import fingerprint
from ..training.launch import is_main_process
from ..training.loop import fit, seed_everything, train_config
from ..training.steps import bce_step
from .workspace import Workspace

log = logging.getLogger(__name__)


def cam_network(params, classes):
    """The CAM network of params `cam` for the dataset's classes (ImageNet-initialised backbone)."""
    c = params.cam
    return build_cam_net(backbone=c.backbone, pretrained=c.pretrained, output_stride=c.output_stride,
                         dilate=c.dilate, num_classes=classes.num_classes)


def classification_set(data, ids, section) -> ClassificationDataset:
    return ClassificationDataset(data, ids, crop=section.crop_size, long_side=tuple(section.resize_long),
                                 scale_range=tuple(section.scale_range), flip=section.flip,
                                 interpolation=section.interpolation, pad=section.crop_pad)


def run(params, ws: Workspace) -> None:
    cfg = params.train_cam_baseline
    device = resolve_device(params.device)
    seed_everything(params.seed)
    data = ws.dataset(params)
    classes = data.classes
    model = cam_network(params, classes)
    out = ws.model_dir("train_cam_baseline")
    run_config = params.model_dump(include={"seed", "device", "cam", "train_cam_baseline"})
    if params.cam.init_checkpoint:
        path = Path(params.cam.init_checkpoint).expanduser()
        path = path if path.is_absolute() else project_root() / path
        kind = load_cam_weights(model, path)
        save_model(out / "model.pt", model, classes, stage="train_cam_baseline", source=str(path), format=kind,
                   params=run_config)
        log.info("baseline CAM network taken from %s (%s format), nothing trained", path, kind)
        return
    ids = data.ids("train")
    train_cfg = train_config(cfg, seed=params.seed, device=device, workers=params.data.workers,
                             checkpoint=out / "checkpoint.pt", live_dir=ws.logs("train_cam_baseline"),
                             fingerprint=fingerprint(run_config, [ws.prepared / "dataset.json"]))
    fit(model, classification_set(data, ids, cfg), bce_step(), model.param_groups(head_lr_mult=cfg.head_lr_mult),
        train_cfg, desc="train_cam_baseline")
    if is_main_process():
        save_model(out / "model.pt", model.cpu(), classes, stage="train_cam_baseline", loss="bce",
                   params=run_config)
        log.info("baseline CAM network written to %s", out / "model.pt")
