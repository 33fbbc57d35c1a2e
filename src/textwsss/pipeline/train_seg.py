"""train_seg: DeepLab v3+ (or CRIS) trained on the pseudo-labels (or, as an upper bound, on the train masks).
DeepLab trains with params train_seg, CRIS with train_cris (CRIS's own recipe).

model.pt also carries the evaluation record (evaluation.py): params eval_seg's inference options and the class
gate tuned on the train labels, so the checkpoint alone reproduces eval_seg. Those params are kept out of the
training fingerprint: changing one reruns this stage, which resumes the finished checkpoint.pt (no training) and
only re-tunes and re-packages."""
from __future__ import annotations

import logging

from ..data.training_sets import SegmentationDataset
from ..evaluation import evaluation_record
from ..models.checkpoints import save_model
from ..models.factory import build_cris, build_deeplab
from ..params import resolve_device
from ..training.fingerprint import fingerprint
from ..training.launch import is_main_process
from ..training.loop import fit, seed_everything, train_config
from ..training.steps import cris_step, deeplab_step
from .workspace import Workspace

log = logging.getLogger(__name__)


def label_paths(params, ws: Workspace, data, ids) -> dict:
    """The label map of every training id: with seg.labels pseudo its CRF seed map (pseudo_labels), random_walk
    its full-coverage label (random_walk), gt its mask (all must have one)."""
    if params.seg.labels == "gt":
        missing = [i for i in ids if not data.has_mask(i)]
        if missing:
            raise ValueError(f"seg.labels: gt trains on the train masks, but {len(missing)} of the {len(ids)} train "
                             f"images have none (e.g. {missing[:5]}); use seg.labels: pseudo or random_walk")
        return {i: data.mask_path(i) for i in ids}
    if params.seg.labels == "random_walk":
        return {i: ws.model_dir("random_walk") / f"{i}.png" for i in ids}
    return {i: ws.pseudo_labels / f"{i}.png" for i in ids}


def init_backbone_from_cam(model, ws: Workspace, stage: str = "train_cam") -> None:
    """DeepLab's backbone takes the weights of the trained CAM network's backbone (same architecture; the
    dilation may differ, the weights do not): features that have already learnt these images' classes. A
    missing or damaged CAM network is an error naming the file and `stage`, which makes it."""
    cam_file = ws.model_file(stage)
    state = ws.read_stage_checkpoint(stage)
    if state["spec"]["backbone"] != model.spec["backbone"]:
        raise ValueError(f"seg.init: cam needs the CAM network's backbone; {cam_file} has "
                         f"{state['spec']['backbone']}, seg.backbone is {model.spec['backbone']}")
    weights = {k[len("backbone."):]: v for k, v in state["state_dict"].items() if k.startswith("backbone.")}
    model.backbone.load_state_dict(weights)
    log.info("DeepLab backbone initialised from the CAM network %s", cam_file)


def run(params, ws: Workspace) -> None:
    seg = params.seg
    cfg = params.train_seg if seg.model == "deeplab" else params.train_cris
    device = resolve_device(params.device)
    seed_everything(params.seed)
    data = ws.dataset(params)
    classes = data.classes
    ids = data.ids("train")
    labels = label_paths(params, ws, data, ids)
    dataset = SegmentationDataset(data, ids, labels, crop=cfg.crop_size, scale_range=tuple(cfg.scale_range),
                                  flip=cfg.flip, interpolation=cfg.interpolation, pad=cfg.crop_pad)
    inputs = list(labels.values())
    if seg.model == "deeplab":
        model = build_deeplab(backbone=seg.backbone, pretrained=seg.pretrained, output_stride=seg.output_stride,
                              num_classes=classes.num_labels, aspp_channels=seg.aspp_channels,
                              decoder_channels=seg.decoder_channels)
        if seg.init == "cam":
            init_backbone_from_cam(model, ws)
            inputs.append(ws.model_file("train_cam"))
        model.backbone.freeze(cfg.freeze_stages, cfg.freeze_batchnorm)
        weights = None
        if cfg.loss == "balanced_ce":
            from ..losses.segmentation import balanced_class_weights, label_counts

            weights = balanced_class_weights(label_counts(labels.values(), classes.num_labels))
            log.info("class weights (inverse square root of the label frequency): %s",
                     ", ".join(f"{n} {w:.2f}" for n, w in zip(classes.label_names, weights.tolist())))
        step = deeplab_step(weights)
    else:
        c = seg.cris
        model = build_cris(arch=c.arch, pretrained=c.pretrained, prompt=c.prompt, decoder_layers=c.decoder_layers,
                           heads=c.heads, ffn_dim=c.ffn_dim, bg_threshold=c.bg_threshold)
        step = cris_step(list(classes.prompts))
    run_config = params.model_dump(include={"seed", "device", "data", "seg",
                                            "train_seg" if seg.model == "deeplab" else "train_cris"})
    out = ws.model_dir("train_seg")
    train_cfg = train_config(cfg, seed=params.seed, device=device, workers=params.data.workers,
                             checkpoint=out / "checkpoint.pt", live_dir=ws.logs("train_seg"),
                             fingerprint=fingerprint(run_config, inputs))
    fit(model, dataset, step, model.param_groups(backbone_lr_mult=cfg.backbone_lr_mult), train_cfg,
        desc="train_seg")
    if is_main_process():
        record = evaluation_record(params, data, device)
        save_model(out / "model.pt", model.cpu(), classes, evaluation=record, stage="train_seg", params=run_config)
        log.info("segmentation model written to %s", out / "model.pt")
