"""The matcher's class gate for the final segmentation model (eval_seg.class_gate: matcher).

A segmentation network trained on a few hundred images knows where objects are better than what they are: on
voc-mini the seed-0 DeepLab scores 21.9 val mIoU as it is and 34.2 when only each image's true classes may be
painted, while the text-image matcher, pretrained on far more data, names an image's classes with a micro-F1 of
~62 without any label. The gate lets the network paint only the classes the matcher finds in the whole image
(zeroshot/presence.py: presence score at or above a threshold, or the best class) and leaves the rest to the
background and the remaining classes. Its threshold is tuned on the train images' image-level labels (the
supervision weakly supervised training has), never on masks or val images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from .presence import class_f1, predict_classes, presence_scores, tune_presence_threshold


@dataclass
class ClassGate:
    matcher: object
    class_concepts: list[str]
    background_concepts: list[str]
    threshold: float
    class_f1_train: float | None  # None: a threshold given, not tuned here

    @classmethod
    def tune(cls, matcher, class_concepts: Sequence[str], background_words: Sequence[str],
             images: Iterable[np.ndarray], labels: Sequence[Sequence[int]]) -> "ClassGate":
        """The gate whose presence threshold maximises the class F1 on `images` (iterable of uint8 RGB arrays)
        against their image-level `labels` (class indices). Background words the matcher cannot score are
        dropped (as in the zero-shot baseline)."""
        background = matcher.check_concepts(list(background_words), background=True)
        gate = cls(matcher, list(class_concepts), background, 0.0, 0.0)
        scores = np.stack([gate.scores(im) for im in images])
        if len(scores) != len(labels):
            raise ValueError(f"class gate: {len(scores)} tuning images but {len(labels)} label lists")
        gate.threshold, gate.class_f1_train = tune_presence_threshold(scores, labels)
        return gate

    def scores(self, image: np.ndarray) -> np.ndarray:
        """(K,) presence score of each class in the whole image."""
        return presence_scores(self.matcher, [image], self.class_concepts, self.background_concepts)[0]

    def classes(self, image: np.ndarray, image_id: str | None = None) -> list[int]:
        """The class indices the segmentation model may paint in `image` (never empty)."""
        return predict_classes(self.scores(image)[None], self.threshold)[0]

    def summary(self, predicted: Sequence[Sequence[int]] = (), labels: Sequence[Sequence[int]] = ()) -> dict:
        """What seg.json records about the gate; with val predictions and labels also their class F1."""
        out = {"kind": "matcher", "threshold": self.threshold, "class_f1_train": self.class_f1_train}
        if labels:
            out["class_f1_val"] = class_f1(predicted, labels)
        return out

    def to_record(self, matcher_spec: dict, matcher_state: dict | None = None) -> dict:
        """The gate as a segmentation checkpoint keeps it: the matcher's spec (guide/factory.py matcher_spec) and
        fitted state, the concepts as they were used, the exact threshold."""
        return {"kind": "matcher", "matcher": dict(matcher_spec), "matcher_state": matcher_state,
                "class_concepts": list(self.class_concepts), "background_concepts": list(self.background_concepts),
                "threshold": float(self.threshold), "class_f1_train": self.class_f1_train}

    @classmethod
    def from_record(cls, record: dict, matcher) -> "ClassGate":
        """The gate of to_record(), on `matcher` rebuilt from record["matcher"] (and its state)."""
        return cls(matcher, list(record["class_concepts"]), list(record["background_concepts"]),
                   float(record["threshold"]), record["class_f1_train"])


def tune_on_split(matcher, data, role: str, background_words: Sequence[str]) -> ClassGate:
    """A ClassGate tuned on every image of the dataset's `role` split (train) against its image-level labels."""
    ids = data.ids(role)
    if not ids:
        raise ValueError(f"class gate: the {role} split has no images to tune the presence threshold on")
    images = (data.read_image(i) for i in tqdm(ids, desc="class gate (tuning)", unit="img", disable=None))
    return ClassGate.tune(matcher, list(data.classes.prompts), background_words, images,
                          [data.labels[i] for i in ids])


@dataclass
class LabelGate:
    """An analysis gate (eval_seg.class_gate: labels): each scored image's own image-level labels. It tells how
    much of the model's error is painting the wrong classes; a model in use has no labels, so it is never a
    result to compare with."""
    labels: dict

    def classes(self, image: np.ndarray, image_id: str | None = None) -> list[int]:
        if image_id not in self.labels:
            raise ValueError(f"class gate 'labels': image {image_id!r} has no image-level labels")
        return list(self.labels[image_id])

    def summary(self, predicted: Sequence[Sequence[int]] = (), labels: Sequence[Sequence[int]] = ()) -> dict:
        return {"kind": "labels", "note": "each image's own labels: an upper bound of any class gate"}
