"""train_seg: DeepLab v3+ (or CRIS) trained on the pseudo-labels (or, as an upper bound, on the train masks)."""
import logging

import torch
from _common import PREPARED, ROOT, start

from textwsss.checkpoints import save_model
from textwsss.datasets import SegmentationDataset
from textwsss.fingerprint import fingerprint
from textwsss.launch import is_main_process, relaunch_under_torchrun
from textwsss.models.factory import build_cris, build_deeplab
from textwsss.params import resolve_device
from textwsss.prepare import read_prepared
from textwsss.steps import cris_step, deeplab_step
from textwsss.train import TrainConfig, fit, seed_everything
from textwsss.voc import CLASS_NAMES, NUM_LABELS, mask_path, readable

OUT = ROOT / "data" / "train_seg"
log = logging.getLogger("train_seg")


def main():
    params = start("train_seg")
    cfg, seg = params.train_seg, params.seg
    relaunch_under_torchrun(cfg.nproc_per_node)
    device = resolve_device(params.device)
    seed_everything(params.seed)
    root = params.data.root_path()
    ids, _ = read_prepared(PREPARED, params.data.train_split)
    if seg.labels == "gt":
        label_paths = {i: mask_path(root, i) for i in ids}
    else:
        label_paths = {i: ROOT / "data" / "pseudo_labels" / f"{i}.png" for i in ids}
    dataset = SegmentationDataset(root, ids, label_paths, crop=cfg.crop_size, scale_range=tuple(cfg.scale_range),
                                  flip=cfg.flip)
    if seg.model == "deeplab":
        model = build_deeplab(backbone=seg.backbone, pretrained=seg.pretrained, output_stride=seg.output_stride,
                              num_classes=NUM_LABELS, aspp_channels=seg.aspp_channels,
                              decoder_channels=seg.decoder_channels)
        step = deeplab_step()
    else:
        c = seg.cris
        model = build_cris(arch=c.arch, pretrained=c.pretrained, prompt=c.prompt, decoder_layers=c.decoder_layers,
                           heads=c.heads, ffn_dim=c.ffn_dim, bg_threshold=c.bg_threshold)
        step = cris_step([readable(n) for n in CLASS_NAMES])
    run_config = params.model_dump(include={"seed", "device", "data", "seg", "train_seg"})
    train_cfg = TrainConfig(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, momentum=cfg.momentum,
        weight_decay=cfg.weight_decay, poly_power=cfg.poly_power, amp=cfg.amp, grad_clip=cfg.grad_clip,
        seed=params.seed, device=device,
        workers=params.data.workers, checkpoint=OUT / "checkpoint.pt", live_dir=ROOT / "reports" / "train_seg",
        fingerprint=fingerprint(run_config, label_paths.values()))
    fit(model, dataset, step, model.param_groups(backbone_lr_mult=cfg.backbone_lr_mult), train_cfg,
        desc="train_seg")
    if is_main_process():
        save_model(OUT / "model.pt", model.cpu(), stage="train_seg", params=run_config)
        log.info("segmentation model written to %s", OUT / "model.pt")


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    main()
