"""train_cam: CLIMS (or plain BCE) training of the CAM network on image-level labels, starting from the
baseline CAM network of train_cam_baseline (params cam.init: baseline, as CLIMS does) or from ImageNet."""
from __future__ import annotations

import logging

from ..models.checkpoints import load_cam_weights, save_model
from ..params import resolve_device
from ..training.fingerprint import fingerprint
from ..training.launch import is_main_process
from ..training.loop import fit, seed_everything, train_config
from ..training.steps import bce_step, class_weight_tensor, clims_step
from .train_cam_baseline import cam_network, classification_set
from .workspace import Workspace, stage_output

log = logging.getLogger(__name__)


def build_guide(params, data, ids, device):
    """The frozen matcher, the class concepts (the prompts, with clims.class_prompts applied), the background
    words (a list, or {class concept: words}) and, for the stand-in, its per-concept calibration on the train
    images and their image-level labels."""
    from ..guide.calibration import calibration_batch
    from ..guide.factory import matcher_from_params

    classes = data.classes
    matcher = matcher_from_params(params, classes, device)
    overrides = {classes.index(k): v for k, v in params.clims.class_prompts.items()}
    class_concepts = [overrides.get(k, p) for k, p in enumerate(classes.prompts)]
    matcher.check_concepts(class_concepts, background=False)
    words = params.clims.background_words
    if isinstance(words, dict):
        background = {class_concepts[classes.index(c)]: matcher.check_concepts(w, background=True)
                      for c, w in words.items()}
        all_words = sorted({w for ws in background.values() for w in ws})
    else:
        background = matcher.check_concepts(words, background=True)
        all_words = list(background)
    if params.guide.calibrate and hasattr(matcher, "calibrate"):
        images, targets = calibration_batch(data, ids, matcher.input_size)
        matcher.calibrate(images.to(device), targets.to(device), class_concepts, all_words)
    return matcher, class_concepts, background


def run(params, ws: Workspace) -> None:
    cfg = params.train_cam
    device = resolve_device(params.device)
    seed_everything(params.seed)
    data = ws.dataset(params)
    ids = data.ids("train")
    classes = data.classes
    model = cam_network(params, classes)
    inputs = [ws.prepared / "dataset.json"]
    if params.cam.init == "baseline":
        baseline = ws.model_file("train_cam_baseline")
        with stage_output("train_cam_baseline", baseline):
            load_cam_weights(model, baseline)
        inputs.append(baseline)
        log.info("fine-tuning the baseline CAM network %s", baseline)
    if cfg.loss == "clims":
        matcher, class_concepts, background = build_guide(params, data, ids, device)
        c = params.clims
        weights = {class_concepts[classes.index(k)]: v for k, v in c.class_weights.items()}
        step = clims_step(matcher, class_concepts, background, alpha=c.alpha, beta=c.beta, gamma=c.gamma,
                          delta=c.delta, cbs_threshold=c.cbs_threshold, reduction=c.reduction,
                          input_mode=c.input_mode, align_corners=c.align_corners,
                          class_weights=class_weight_tensor(weights, class_concepts),
                          max_images_per_call=cfg.matcher_batch)
    else:
        step = bce_step()
    run_config = params.model_dump(include={"seed", "device", "guide", "clims", "cam", "train_cam"})
    out = ws.model_dir("train_cam")
    train_cfg = train_config(cfg, seed=params.seed, device=device, workers=params.data.workers,
                             checkpoint=out / "checkpoint.pt", live_dir=ws.logs("train_cam"),
                             fingerprint=fingerprint(run_config, inputs))
    fit(model, classification_set(data, ids, cfg), step, model.param_groups(head_lr_mult=cfg.head_lr_mult),
        train_cfg, desc="train_cam")
    if is_main_process():
        save_model(out / "model.pt", model.cpu(), classes, stage="train_cam", loss=cfg.loss, params=run_config)
        log.info("CAM network written to %s", out / "model.pt")
