"""eval_seg's class gate: only the classes the matcher finds in an image may be painted."""
import hashlib
import json

import numpy as np
import pytest
import torch

from textwsss.data.classes import VOC, ClassList
from textwsss.models.checkpoints import load_model, save_model
from textwsss.models.factory import build_deeplab
from textwsss.pipeline.eval_seg import evaluate_model
from textwsss.segment import labels_from_probs
from textwsss.guide.base import Matcher
from textwsss.zeroshot.class_gate import ClassGate, LabelGate, tune_on_split


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
    # every threshold in (0.3, 0.45] gives F1 100 (image 0 must drop c at 0.3, image 2 keep b at 0.45); the
    # documented choice among ties is the lowest point of the grid 0.02, 0.04, ...: 0.32
    assert gate.class_f1_train == pytest.approx(100.0) and gate.threshold == pytest.approx(0.32)
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


class _LogitTable(Matcher):
    """A matcher whose logits per image come from a table keyed by the image's grey level (0-255), one value per
    concept; it records the grey levels of the images it is shown."""

    input_size = 4

    def __init__(self, concepts, table):
        super().__init__()
        self.concepts, self.table, self.seen = list(concepts), table, []

    def _encode_normalised(self, images):
        return images.mean(dim=(1, 2, 3))[:, None]

    def _encode_concept_batch(self, concepts):
        return torch.tensor([[float(self.concepts.index(c))] for c in concepts])

    def logits(self, image_feats, concept_feats):
        levels = [round(float(v) * 255) for v in image_feats[:, 0]]
        self.seen += levels
        columns = [int(c) for c in concept_feats[:, 0]]
        return torch.tensor([[self.table[v][c] for c in columns] for v in levels], dtype=torch.float64)


def _grey(level):
    return np.full((6, 6, 3), level, np.uint8)


CONCEPTS = ["cat", "dog", "cow", "grass"]
# exp(logits) 4, 3, 2 for the classes and 1 for the background word: with the background word in the softmax the
# presence scores are 0.4, 0.3, 0.2; without it 4/9, 3/9, 2/9
LOGITS = {10: np.log([4.0, 3.0, 2.0, 1.0])}


def test_gate_softmax_includes_the_background_words():
    matcher = _LogitTable(CONCEPTS, LOGITS)
    gate = ClassGate.tune(matcher, CONCEPTS[:3], ["grass"], [_grey(10)], [[0, 1]])
    assert gate.background_concepts == ["grass"]
    np.testing.assert_allclose(gate.scores(_grey(10)), [0.4, 0.3, 0.2], rtol=1e-5)
    # F1 100 for thresholds in (0.2, 0.3]: the lowest grid point 0.22 (without the word: (2/9, 3/9] -> 0.24)
    assert gate.threshold == pytest.approx(0.22) and gate.class_f1_train == pytest.approx(100.0)
    # at 0.21 the background word decides whether cow (2/9 = 0.222 without it, 0.2 with it) stays out
    assert ClassGate(matcher, CONCEPTS[:3], ["grass"], 0.21, None).classes(_grey(10)) == [0, 1]
    assert ClassGate(matcher, CONCEPTS[:3], [], 0.21, None).classes(_grey(10)) == [0, 1, 2]


class _Split:
    """The part of a PreparedDataset that tune_on_split reads: ids per role, images, labels, class prompts."""

    def __init__(self, ids, labels):
        self._ids, self.labels = ids, labels
        self.classes = ClassList.of(["cat", "dog", "cow"])

    def ids(self, role):
        return list(self._ids[role])

    def read_image(self, image_id):
        return _grey(int(image_id))


def test_gate_is_tuned_on_the_train_images_and_labels_only():
    # train images 10 and 20 (scores 0.4/0.3/0.2 and 0.1/0.3/0.4): their labels want a threshold in (0.2, 0.3]
    # -> 0.22; the val image 30 (scores 0.522/0.435/0.043, labelled cat alone) would want (0.435, 0.522] -> 0.44
    table = {10: np.log([4.0, 3.0, 2.0, 1.0]), 20: np.log([1.0, 3.0, 4.0, 2.0]),
             30: np.log([6.0, 5.0, 0.5, 0.0001])}
    data = _Split({"train": ["10", "20"], "val": ["30"]}, {"10": [0, 1], "20": [1, 2], "30": [0]})
    matcher = _LogitTable(CONCEPTS, table)
    gate = tune_on_split(matcher, data, "train", ["grass"])
    assert sorted(set(matcher.seen)) == [10, 20]  # the val image never reached the matcher
    assert gate.threshold == pytest.approx(0.22) and gate.class_f1_train == pytest.approx(100.0)
    assert tune_on_split(_LogitTable(CONCEPTS, table), data, "val", ["grass"]).threshold == pytest.approx(0.44)
    with pytest.raises(ValueError, match="the val split has no images"):
        tune_on_split(matcher, _Split({"train": ["10"], "val": []}, {"10": [0]}), "val", ["grass"])


class _ClosedVocabulary(_LogitTable):
    """A closed-vocabulary matcher (as the ImageNet stand-in): a concept it cannot score stops as a class and is
    dropped as a background word."""

    def check_concepts(self, concepts, *, background):
        unknown = [c for c in concepts if c not in self.concepts]
        if unknown and not background:
            raise ValueError(f"cannot score the classes {unknown}")
        return [c for c in concepts if c in self.concepts]


def test_gate_drops_background_words_the_matcher_cannot_score():
    matcher = _ClosedVocabulary(CONCEPTS, LOGITS)
    gate = ClassGate.tune(matcher, CONCEPTS[:3], ["lava", "grass"], [_grey(10)], [[0, 1]])
    assert gate.background_concepts == ["grass"]  # "lava" dropped, not refused
    np.testing.assert_allclose(gate.scores(_grey(10)), [0.4, 0.3, 0.2], rtol=1e-5)
    with pytest.raises(ValueError, match=r"^class gate: 1 tuning images but 2 label lists$"):
        ClassGate.tune(matcher, CONCEPTS[:3], ["grass"], [_grey(10)], [[0, 1], [2]])


def test_gate_record_round_trip_scores_identically():
    # two images: grey 10 (scores 0.4 / 0.3 / 0.2 with the background word) labelled cat + dog, grey 20 (0.1 / 0.3 /
    # 0.4) labelled dog + cow: F1 100 for thresholds in (0.2, 0.3] -> 0.22 (test_gate_is_tuned_on_the_train_...)
    table = {10: np.log([4.0, 3.0, 2.0, 1.0]), 20: np.log([1.0, 3.0, 4.0, 2.0])}
    images = [_grey(10), _grey(20)]
    gate = ClassGate.tune(_LogitTable(CONCEPTS, table), CONCEPTS[:3], ["grass"], images, [[0, 1], [1, 2]])
    spec, state = {"kind": "imagenet", "prompt": "a photo of a {}."}, {"bias": [[[1, 2], 0.5]]}
    record = gate.to_record(spec, state)
    assert record == {"kind": "matcher", "matcher": {"kind": "imagenet", "prompt": "a photo of a {}."},
                      "matcher_state": {"bias": [[[1, 2], 0.5]]}, "class_concepts": ["cat", "dog", "cow"],
                      "background_concepts": ["grass"], "threshold": pytest.approx(0.22),
                      "class_f1_train": pytest.approx(100.0)}
    spec["kind"] = "open_clip"  # the record is a copy: a later change of the caller's spec does not reach it
    assert record["matcher"]["kind"] == "imagenet"
    # a checkpoint stores plain data; the gate is rebuilt on a new matcher of the same spec
    stored = json.loads(json.dumps(record))
    loaded = ClassGate.from_record(stored, _LogitTable(CONCEPTS, table))
    assert (loaded.class_concepts, loaded.background_concepts) == (["cat", "dog", "cow"], ["grass"])
    assert loaded.threshold == gate.threshold and loaded.class_f1_train == gate.class_f1_train
    assert isinstance(loaded.threshold, float)
    for image in images:
        np.testing.assert_array_equal(loaded.scores(image), gate.scores(image))
    assert [loaded.classes(im) for im in images] == [gate.classes(im) for im in images] == [[0, 1], [1, 2]]
    assert loaded.summary() == gate.summary() == {"kind": "matcher", "threshold": pytest.approx(0.22),
                                                  "class_f1_train": pytest.approx(100.0)}


def test_label_gate_summary_says_it_is_an_upper_bound():
    assert LabelGate({"a": [0]}).summary() == {
        "kind": "labels", "note": "each image's own labels: an upper bound of any class gate"}
    assert LabelGate({"a": [0, 2]}).classes(np.zeros((2, 2, 3), np.uint8), "a") == [0, 2]
