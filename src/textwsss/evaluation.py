"""Scoring a segmentation checkpoint: one code path for eval_seg and `textwsss evaluate`, and the options and
class gate `textwsss predict` paints with.

A segmentation checkpoint (train_seg) carries an evaluation record, everything its score depends on besides the
weights, class list and architecture:
- inference: eval_seg's working size (max_side), scales, flip and dense-CRF settings (null: no CRF);
- class_gate: the matcher's class gate tuned on the train images' image-level labels (ClassGate.to_record: the
  matcher's spec and fitted state, the concepts, the exact threshold), or null (eval_seg.class_gate none/labels).
eval_seg scores the checkpoint with the record as it is; the CLI with the record unless a flag overrides a part.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from .data.classes import ClassList
from .data.prepared import PreparedDataset
from .metrics import ConfusionMatrix
from .models.runtime import for_inference, image_probe
from .params import DEEPLAB_CRF, CRFParams
from .segment import labels_from_probs, predict_probs
from .viz import label_figure
from .zeroshot.class_gate import ClassGate, LabelGate

log = logging.getLogger(__name__)

RECORD_VERSION = 1
SEGMENTATION_TYPES = ("deeplab", "cris")
STORED = "stored"  # class_gate(): the checkpoint's own gate


@dataclass(frozen=True)
class InferenceOptions:
    """How a segmentation model is run on an image (segment.py predict_probs / labels_from_probs)."""
    max_side: int = 0  # the model sees the image downscaled to this long side (0: as it is)
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crf: CRFParams | None = None

    @classmethod
    def from_params(cls, e) -> "InferenceOptions":
        """Params eval_seg's options."""
        return cls(int(e.max_side), tuple(float(s) for s in e.scales), bool(e.flip),
                   e.crf if e.postprocess_crf else None)

    def to_record(self) -> dict:
        return {"max_side": self.max_side, "scales": list(self.scales), "flip": self.flip,
                "crf": None if self.crf is None else self.crf.model_dump()}

    @classmethod
    def from_record(cls, record: dict) -> "InferenceOptions":
        return cls(int(record["max_side"]), tuple(float(s) for s in record["scales"]), bool(record["flip"]),
                   None if record["crf"] is None else CRFParams(**record["crf"]))

    def override(self, *, max_side: int | None = None, scales: Sequence[float] | None = None,
                 flip: bool | None = None, crf: bool | None = None) -> "InferenceOptions":
        """These options with the given ones replaced (None: kept). crf True keeps the recorded CRF settings, or
        uses DeepLab's (eval_seg.crf's default) when none are recorded; False switches it off."""
        if max_side is not None and max_side < 0:
            raise ValueError(f"--max-side: expected 0 (full size) or a positive long side, got {max_side}")
        if scales is not None and (not scales or any(s <= 0 for s in scales)):
            raise ValueError(f"--scales: expected positive scale factors, got {list(scales)}")
        changes = {"max_side": max_side, "scales": None if scales is None else tuple(float(s) for s in scales),
                   "flip": flip}
        if crf is not None:
            changes["crf"] = (self.crf or DEEPLAB_CRF) if crf else None
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None or k == "crf"})


def evaluation_record(params, data: PreparedDataset, device) -> dict:
    """What train_seg stores in the segmentation checkpoint: params eval_seg's inference options and, for
    eval_seg.class_gate matcher, the gate tuned on the train images' image-level labels."""
    from .guide.factory import matcher_from_params, matcher_spec, matcher_state
    from .zeroshot.class_gate import tune_on_split

    e = params.eval_seg
    gate = None
    if e.class_gate == "matcher":
        spec = matcher_spec(params, data.classes)
        if spec["kind"] == "open_clip" and str(spec["pretrained"]).strip().lower() in ("", "none"):
            log.warning("class gate: the open_clip matcher has random weights (guide.pretrained none); a matcher "
                        "rebuilt from the checkpoint gets other random weights and so another gate")
        matcher = matcher_from_params(params, data.classes, device)
        tuned = tune_on_split(matcher, data, "train", params.zeroshot.background_words)
        log.info("class gate: presence threshold %.4f (class F1 %.1f on the train labels)", tuned.threshold,
                 tuned.class_f1_train)
        gate = tuned.to_record(spec, matcher_state(matcher))
    return {"version": RECORD_VERSION, "inference": InferenceOptions.from_params(e).to_record(), "class_gate": gate}


@dataclass
class SegCheckpoint:
    path: Path
    model: object  # eval mode, its `classes` attribute set
    meta: dict
    record: dict | None  # None: written before checkpoints carried an evaluation record

    @property
    def classes(self) -> ClassList:
        return self.model.classes

    @property
    def gate_record(self) -> dict | None:
        return None if self.record is None else self.record["class_gate"]


def load_segmentation(path: str | Path, device="cpu", stage: str | None = None) -> SegCheckpoint:
    """A segmentation checkpoint of train_seg with its evaluation record; a CAM network is refused by name.
    stage: the pipeline stage that wrote `path` (eval_seg: train_seg), named with how to remake it when the file
    is missing or damaged; None (the CLI: a checkpoint from anywhere): the error names the file only."""
    from .models.checkpoints import load_model_state

    path = Path(path)
    if stage is None:
        model, state = load_model_state(path, device)
    else:
        from .pipeline.workspace import stage_output

        with stage_output(stage, path):
            model, state = load_model_state(path, device)
    kind = state["spec"]["type"]
    if kind not in SEGMENTATION_TYPES:
        stage = state.get("meta", {}).get("stage", "train_cam")
        raise ValueError(f"{path}: a CAM network ({kind}, written by {stage}), not a segmentation model; the "
                         f"segmentation model is data/train_seg/model.pt (written by train_seg)")
    record = state.get("evaluation")
    if record is not None and record.get("version") != RECORD_VERSION:
        raise ValueError(f"{path}: evaluation record of version {record.get('version')!r}, this version reads "
                         f"{RECORD_VERSION}; retrain it with this version (dvc repro)")
    return SegCheckpoint(path, model, state.get("meta", {}), record)


def inference_options(ckpt: SegCheckpoint, fallback: InferenceOptions = InferenceOptions(),
                      **overrides) -> InferenceOptions:
    """The checkpoint's inference options with `overrides` (InferenceOptions.override); `fallback` for a
    checkpoint of an older format without a record."""
    if ckpt.record is None:
        log.warning("%s carries no evaluation record (written by an older train_seg): running at long side %s, "
                    "scale 1, without flip, CRF or class gate unless flags set them; retrain it (dvc repro) to "
                    "get eval_seg's options", ckpt.path, fallback.max_side or "as is")
        base = fallback
    else:
        base = InferenceOptions.from_record(ckpt.record["inference"])
    return base.override(**overrides)


def gate_from_record(record: dict, device="cpu") -> ClassGate:
    """The ClassGate of a checkpoint's class_gate record, its matcher rebuilt from the recorded spec and state."""
    from .guide.factory import matcher_from_spec, restore_matcher_state

    matcher = restore_matcher_state(matcher_from_spec(record["matcher"], device), record["matcher_state"])
    return ClassGate.from_record(record, matcher)


def class_gate(ckpt: SegCheckpoint, gate=STORED, device="cpu") -> ClassGate | LabelGate | None:
    """The class gate to paint with. gate: STORED, the checkpoint's own (None when it has none); None, no gate;
    a number, the checkpoint's matcher at this presence threshold; a ClassGate or LabelGate, itself."""
    if gate is None or isinstance(gate, (ClassGate, LabelGate)):
        return gate
    record = ckpt.gate_record
    if isinstance(gate, str):
        if gate != STORED:
            raise ValueError(f"class gate: expected {STORED!r}, None, a threshold or a gate, got {gate!r}")
        return None if record is None else gate_from_record(record, device)
    threshold = float(gate)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--class-gate: expected a presence threshold in [0, 1] or 'none', got {gate}")
    if record is None:
        raise ValueError(f"{ckpt.path} carries no class gate (an older train_seg, or eval_seg.class_gate was not "
                         f"matcher), so a threshold needs a matcher from a params file")
    out = gate_from_record(record, device)
    out.threshold, out.class_f1_train = threshold, None  # a threshold given, not the tuned one
    return out


def inference_copy(model, device):
    """The model as evaluation runs it; CRIS needs prompts besides images, so only DeepLab gets the probe that
    allows folding its BatchNorm."""
    return for_inference(model, device, probe=None if model.spec["type"] == "cris" else image_probe(device))


def evaluate_checkpoint(ckpt: SegCheckpoint, data: PreparedDataset, ids: Sequence[str], *,
                        overrides: dict | None = None, gate=STORED, device="cpu", figures_dir: Path | None = None,
                        figure_ids: Sequence[str] = ()) -> tuple[dict, np.ndarray | None]:
    """The checkpoint scored on `ids` (evaluate_model) with its recorded options, `overrides` replacing some
    (InferenceOptions.override's keywords), and the class gate `gate` (class_gate())."""
    if ckpt.classes.names != data.classes.names:
        raise ValueError(f"{ckpt.path}: the segmentation model was trained for the classes {list(ckpt.classes.names)}"
                         f", the dataset has {list(data.classes.names)}; rerun train_seg (dvc repro)")
    options = inference_options(ckpt, **(overrides or {}))
    return evaluate_model(ckpt.model, data, ids, ckpt.classes, scales=options.scales, flip=options.flip,
                          crf=options.crf, max_side=options.max_side, gate=class_gate(ckpt, gate, device),
                          device=device, figures_dir=figures_dir, figure_ids=figure_ids)


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
