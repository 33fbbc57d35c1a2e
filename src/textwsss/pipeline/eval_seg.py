"""eval_seg: the trained segmentation model on the val images that have masks: seg.json, the confusion matrix,
overlay figures. The model is scored as its checkpoint says (evaluation.py: the inference options and class gate
train_seg recorded from params eval_seg), through the code `textwsss evaluate` runs, so both give the same
score; only eval_seg.class_gate labels (an analysis: each val image's own labels) is applied here."""
from __future__ import annotations

import logging

import numpy as np

from ..evaluation import STORED, evaluate_checkpoint, evaluate_model, inference_copy, load_segmentation
from ..io import write_json
from ..params import resolve_device
from ..viz import confusion_figure, pick_figure_ids
from ..zeroshot.class_gate import LabelGate
from .workspace import Workspace

__all__ = ["evaluate_model", "inference_copy", "run"]  # evaluate_model's home is evaluation.py

log = logging.getLogger(__name__)


def run(params, ws: Workspace) -> None:
    e = params.eval_seg
    device = resolve_device(params.device)
    data = ws.dataset(params)
    ids = data.ids("val")
    ckpt = load_segmentation(ws.model_file("train_seg"), device, stage="train_seg")
    if ckpt.record is None:
        raise ValueError(f"{ckpt.path} carries no evaluation record (written by an older train_seg); retrain it "
                         f"(dvc repro)")
    gate = LabelGate(dict(data.labels)) if e.class_gate == "labels" else STORED
    summary, matrix = evaluate_checkpoint(ckpt, data, ids, gate=gate, device=device, figures_dir=ws.figures("seg"),
                                          figure_ids=pick_figure_ids(ids, e.figures))
    summary["note"] = data.describe_scoring("val", data.with_masks(ids))
    write_json(ws.metrics / "seg.json", summary)
    classes = ckpt.classes
    if matrix is None:
        matrix = np.zeros((classes.num_labels, classes.num_labels), dtype=np.int64)
        log.warning("final model not scored: none of the %d val images has a mask", len(ids))
    else:
        log.info("val mIoU %.2f, pixel accuracy %.2f (%s)", summary["miou"], summary["pixel_acc"], summary["note"])
        if "ungated" in summary:
            log.info("without the class gate: val mIoU %.2f, pixel accuracy %.2f", summary["ungated"]["miou"],
                     summary["ungated"]["pixel_acc"])
    write_json(ws.plots / "seg_confusion.json", {"labels": list(classes.label_names), "matrix": matrix.tolist()})
    confusion_figure(ws.plots / "seg_confusion.png", matrix, classes.label_names)
