"""eval_seg's class gate: only the classes the matcher finds in an image may be painted."""
import hashlib

import numpy as np
import pytest
import torch

from textwsss.data.classes import VOC
from textwsss.models.checkpoints import load_model, save_model
from textwsss.models.factory import build_deeplab
from textwsss.pipeline.eval_seg import evaluate_model
from textwsss.segment import labels_from_probs
from textwsss.zeroshot.class_gate import ClassGate, LabelGate


def test_labels_from_probs_paints_only_kept_classes():
    # labels: background, class 0, class 1, class 2; pixel columns favour class 2, class 0, background
    probs = np.array([[[0.1, 0.2, 0.6]],
                      [[0.3, 0.5, 0.1]],
                      [[0.0, 0.1, 0.2]],
                      [[0.6, 0.2, 0.1]]], dtype=np.float32)
    image = np.zeros((1, 3, 3), np.uint8)
    np.testing.assert_array_equal(labels_from_probs(image, probs, (1, 3)), [[3, 1, 0]])
    # class 2 gated away: its pixel goes to the best allowed label (class 0: 0.3 > background 0.1)
    np.testing.assert_array_equal(labels_from_probs(image, probs, (1, 3), keep=[0]), [[1, 1, 0]])
    # only class 1 allowed: the first pixel is background (0.1 > 0.0), the second too (0.2 > 0.1)
    np.testing.assert_array_equal(labels_from_probs(image, probs, (1, 3), keep=[1]), [[0, 0, 0]])
    # upsampled to a larger size, still only allowed labels
    assert set(np.unique(labels_from_probs(image, probs, (4, 9), keep=[0]))) <= {0, 1}


class _ScoreTable:
    """A stand-in matcher whose presence scores per image come from a table keyed by the image's bytes."""

    def __init__(self, table):
        self.table = table

    def check_concepts(self, concepts, background):
        return list(concepts)


class _TableGate(ClassGate):
    def scores(self, image):
        return self.matcher.table[hashlib.md5(np.ascontiguousarray(image).tobytes()).hexdigest()]


def _key(image):
    return hashlib.md5(np.ascontiguousarray(image).tobytes()).hexdigest()


def test_gate_threshold_maximises_the_train_class_f1():
    images = [np.full((4, 4, 3), v, np.uint8) for v in range(4)]
    scores = [np.array([0.9, 0.1, 0.3]), np.array([0.2, 0.6, 0.25]), np.array([0.5, 0.45, 0.05]),
              np.array([0.05, 0.05, 0.8])]
    matcher = _ScoreTable({_key(im): s for im, s in zip(images, scores)})
    gate = _TableGate.tune(matcher, ["a", "b", "c"], ["sea"], images, [[0], [1], [0, 1], [2]])
    assert gate.class_f1_train == pytest.approx(100.0) and 0.3 < gate.threshold <= 0.45
    assert gate.classes(images[2]) == [0, 1]
    summary = gate.summary([[0], [1]], [[0], [0, 1]])
    assert summary["kind"] == "matcher" and summary["class_f1_val"] == pytest.approx(200 * 2 / 5)


def test_evaluate_model_scores_the_gated_labels_and_the_models_own(voc_data, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_model(path, build_deeplab(backbone="efficientnet_lite0", pretrained="none", num_classes=21).eval(), VOC,
               stage="test")
    model, _ = load_model(path)
    ids = voc_data.with_masks(voc_data.ids("val"))[:4]
    # an oracle gate: each image's own classes
    table = {}
    for i in ids:
        onehot = np.zeros(20, np.float32)
        onehot[voc_data.labels[i]] = 1.0
        table[_key(voc_data.read_image(i))] = onehot
    gate = _TableGate(_ScoreTable(table), list(VOC.prompts), [], 0.5, 100.0)
    gated, matrix = evaluate_model(model, voc_data, ids, model.classes, max_side=96, gate=gate)
    plain, plain_matrix = evaluate_model(model, voc_data, ids, model.classes, max_side=96)
    allowed = {0} | {k + 1 for i in ids for k in voc_data.labels[i]}
    painted = set(np.flatnonzero(matrix.sum(0)))
    assert painted <= allowed, (painted, allowed)
    assert len(set(np.flatnonzero(plain_matrix.sum(0))) - allowed) > 0  # the untrained model paints others too
    assert gated["ungated"]["miou"] == pytest.approx(plain["miou"])
    assert gated["class_gate"]["class_f1_val"] == pytest.approx(100.0)
    assert "ungated" not in plain and "class_gate" not in plain
    # eval_seg.class_gate: labels is the same oracle, keyed by image id
    labelled, labelled_matrix = evaluate_model(model, voc_data, ids, model.classes, max_side=96,
                                               gate=LabelGate(dict(voc_data.labels)))
    np.testing.assert_array_equal(labelled_matrix, matrix)
    assert labelled["class_gate"]["kind"] == "labels"
    with pytest.raises(ValueError, match="no image-level labels"):
        LabelGate({}).classes(np.zeros((2, 2, 3), np.uint8), "2007_000033")
