"""train_cam: CLIMS (or plain BCE) training of the CAM network on image-level labels."""
import logging

import torch
from _common import PREPARED, ROOT, start

from textwsss.checkpoints import save_model
from textwsss.datasets import ClassificationDataset
from textwsss.fingerprint import fingerprint
from textwsss.launch import is_main_process, relaunch_under_torchrun
from textwsss.models.factory import build_cam_net
from textwsss.params import resolve_device
from textwsss.prepare import read_prepared
from textwsss.steps import bce_step, class_weight_tensor, clims_step
from textwsss.train import TrainConfig, fit, seed_everything
from textwsss.voc import CLASS_NAMES, readable

OUT = ROOT / "data" / "train_cam"
log = logging.getLogger("train_cam")


def build_guide(params, device, ids, labels):
    """The frozen matcher, its concepts, and (stand-in only) its per-concept calibration on the train images."""
    from textwsss.guide.calibration import calibration_batch
    from textwsss.guide.factory import build_matcher

    g = params.guide
    matcher = build_matcher(g.kind, arch=g.arch, pretrained=g.pretrained, prompt=g.prompt,
                            temperature=g.temperature, device=device)
    class_concepts = [readable(n) for n in CLASS_NAMES]
    matcher.check_concepts(class_concepts, background=False)
    words = params.clims.background_words
    if isinstance(words, dict):
        background = {readable(c): matcher.check_concepts(w, background=True) for c, w in words.items()}
        all_words = sorted({w for ws in background.values() for w in ws})
    else:
        background = matcher.check_concepts(words, background=True)
        all_words = list(background)
    if g.calibrate and hasattr(matcher, "calibrate"):
        images, targets = calibration_batch(params.data.root_path(), ids, labels, matcher.input_size)
        matcher.calibrate(images.to(device), targets.to(device), class_concepts + all_words)
    return matcher, class_concepts, background


def main():
    params = start("train_cam")
    cfg = params.train_cam
    relaunch_under_torchrun(cfg.nproc_per_node)
    device = resolve_device(params.device)
    seed_everything(params.seed)
    ids, labels = read_prepared(PREPARED, params.data.train_split)
    model = build_cam_net(backbone=cfg.backbone, pretrained=cfg.pretrained, output_stride=cfg.output_stride,
                          num_classes=len(CLASS_NAMES))
    if cfg.loss == "clims":
        matcher, class_concepts, background = build_guide(params, device, ids, labels)
        c = params.clims
        step = clims_step(matcher, class_concepts, background, alpha=c.alpha, beta=c.beta, gamma=c.gamma,
                          delta=c.delta, cbs_threshold=c.cbs_threshold,
                          class_weights=class_weight_tensor(c.class_weights, CLASS_NAMES),
                          max_images_per_call=cfg.matcher_batch)
    else:
        step = bce_step()
    dataset = ClassificationDataset(params.data.root_path(), ids, labels, crop=cfg.crop_size,
                                    long_side=tuple(cfg.resize_long), scale_range=tuple(cfg.scale_range),
                                    flip=cfg.flip)
    run_config = params.model_dump(include={"seed", "device", "data", "guide", "clims", "train_cam"})
    train_cfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, momentum=cfg.momentum,
        weight_decay=cfg.weight_decay, poly_power=cfg.poly_power, amp=cfg.amp, grad_clip=cfg.grad_clip,
        seed=params.seed, device=device,
        workers=params.data.workers, checkpoint=OUT / "checkpoint.pt", live_dir=ROOT / "reports" / "train_cam",
        fingerprint=fingerprint(run_config, [PREPARED / "labels.json"]))
    fit(model, dataset, step, model.param_groups(head_lr_mult=cfg.head_lr_mult), train_cfg, desc="train_cam")
    if is_main_process():
        save_model(OUT / "model.pt", model.cpu(), stage="train_cam", loss=cfg.loss, params=run_config)
        log.info("CAM network written to %s", OUT / "model.pt")


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    main()
