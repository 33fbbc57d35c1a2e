"""eval_seg: the trained segmentation model on the val images that have masks: seg.json, the confusion matrix,
overlay figures. `textwsss evaluate` runs the same scoring on any prepared-style dataset."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from ..data.classes import ClassList
from ..data.prepared import PreparedDataset
from ..io import write_json
from ..metrics import ConfusionMatrix
from ..models.checkpoints import load_model
from ..models.runtime import for_inference, image_probe
from ..params import resolve_device
from ..segment import labels_from_probs, predict_probs
from ..zeroshot.class_gate import ClassGate, LabelGate, tune_on_split
from ..viz import confusion_figure, label_figure, pick_figure_ids
from .workspace import Workspace

log = logging.getLogger(__name__)


def inference_copy(model, device):
    """The model as evaluation runs it; CRIS needs prompts besides images, so only DeepLab gets the probe that
    allows folding its BatchNorm."""
    return for_inference(model, device, probe=None if model.spec["type"] == "cris" else image_probe(device))


def evaluate_model(model, data: PreparedDataset, ids: Sequence[str], classes: ClassList, *,
                   scales: Sequence[float] = (1.0,), flip: bool = False, crf=None, max_side: int = 0,
                   gate: ClassGate | LabelGate | None = None, device="cpu", figures_dir: Path | None = None,
                   figure_ids: Sequence[str] = ()) -> tuple[dict, np.ndarray | None]:
    """Scores the model on the `ids` that have masks: (summary with miou/pixel_acc/per_class/n_images, confusion
    matrix); figures for `figure_ids` (with the mask where there is one). Without masked ids: None scores.

    gate: a ClassGate; the scores are then those of the gated labels, and summary["ungated"] holds the model's
    own (the same probabilities, every class allowed) and summary["class_gate"] the gate's threshold and class F1.
    """
    model = inference_copy(model, device)
    scored = data.with_masks(ids)
    cm = ConfusionMatrix(classes.label_names)
    cm_ungated = ConfusionMatrix(classes.label_names) if gate is not None else None
    shown = set(figure_ids)
    gated, truth = [], []
    for i in tqdm(list(dict.fromkeys([*scored, *figure_ids])), desc="evaluate", unit="img", disable=None):
        image = data.read_image(i)
        work, probs = predict_probs(model, image, classes, scales=scales, flip=flip, max_side=max_side,
                                    device=device)
        keep = gate.classes(image, i) if gate is not None else None
        pred = labels_from_probs(work, probs, image.shape[:2], crf=crf, keep=keep)
        own = labels_from_probs(work, probs, image.shape[:2], crf=crf) if gate is not None else None
        gt = data.read_mask(i) if data.has_mask(i) else None
        if gt is not None:
            cm.update(pred, gt)
            if gate is not None:
                cm_ungated.update(own, gt)
                gated.append(keep)
                truth.append(list(data.labels.get(i, [])))
        if figures_dir is not None and i in shown:
            maps = ([("ground truth", gt)] if gt is not None else []) + [("prediction", pred)]
            if gate is not None:
                maps.append(("without the class gate", own))
            label_figure(Path(figures_dir) / f"{i}.png", image, maps)
    if not scored:
        return {"miou": None, "pixel_acc": None, "per_class": {}, "absent": [], "n_images": 0}, None
    summary = cm.summary()
    out = {"miou": summary["miou"], "pixel_acc": summary["pixel_acc"], "per_class": summary["per_class"],
           "absent": summary["absent"], "n_images": len(scored)}
    if gate is not None:
        own = cm_ungated.summary()
        out["ungated"] = {"miou": own["miou"], "pixel_acc": own["pixel_acc"], "per_class": own["per_class"]}
        out["class_gate"] = gate.summary(gated, truth if all(truth) else ())
    return out, cm.matrix


def class_gate(params, data: PreparedDataset, device) -> ClassGate | LabelGate | None:
    """eval_seg.class_gate's gate: matcher (tuned on the train images' image-level labels), labels (each val
    image's own: analysis only), or None."""
    if params.eval_seg.class_gate == "none":
        return None
    if params.eval_seg.class_gate == "labels":
        return LabelGate(dict(data.labels))
    from ..guide.factory import matcher_from_params

    matcher = matcher_from_params(params, data.classes, device)
    gate = tune_on_split(matcher, data, "train", params.zeroshot.background_words)
    log.info("class gate: presence threshold %.2f (class F1 %.1f on the train labels)", gate.threshold,
             gate.class_f1_train)
    return gate


def run(params, ws: Workspace) -> None:
    e = params.eval_seg
    device = resolve_device(params.device)
    data = ws.dataset(params)
    ids = data.ids("val")
    model, _ = load_model(ws.model_dir("train_seg") / "model.pt", device)
    classes = model.classes
    if classes.names != data.classes.names:
        raise ValueError(f"the segmentation model was trained for the classes {list(classes.names)}, the dataset "
                         f"has {list(data.classes.names)}; rerun train_seg (dvc repro)")
    summary, matrix = evaluate_model(model, data, ids, classes, scales=e.scales, flip=e.flip,
                                     crf=e.crf if e.postprocess_crf else None, max_side=e.max_side,
                                     gate=class_gate(params, data, device), device=device,
                                     figures_dir=ws.figures("seg"), figure_ids=pick_figure_ids(ids, e.figures))
    summary["note"] = data.describe_scoring("val", data.with_masks(ids))
    write_json(ws.metrics / "seg.json", summary)
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
