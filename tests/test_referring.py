"""The VOC referring benchmark: expression rules, determinism, evaluation."""
import json

import numpy as np
import pytest

from textwsss.tas.referring import (Expression, build_expressions, evaluate, expressions_of_mask,
                                    save_expressions, separated_extremes)
from textwsss.data.classes import VOC
from vocmini import CLASS_NAMES, read_split, readable

COW, DOG = CLASS_NAMES.index("cow"), CLASS_NAMES.index("dog")


def two_cows_one_dog() -> np.ndarray:
    mask = np.zeros((40, 60), np.uint8)
    mask[5:15, 2:12] = COW + 1  # left cow
    mask[5:20, 30:45] = COW + 1  # right cow
    mask[25:38, 20:40] = DOG + 1
    return mask


def test_two_separated_cows_give_left_and_right_with_their_masks():
    mask = two_cows_one_dog()
    exprs = expressions_of_mask("img", mask, VOC, min_area=20)
    by_text = {e.text: e for e in exprs}
    assert set(by_text) == {"the cow on the left", "the cow on the right", "a dog"}
    left, right = by_text["the cow on the left"], by_text["the cow on the right"]
    expected_left = np.zeros_like(mask, bool)
    expected_left[5:15, 2:12] = True
    expected_right = np.zeros_like(mask, bool)
    expected_right[5:20, 30:45] = True
    np.testing.assert_array_equal(left.mask, expected_left)
    np.testing.assert_array_equal(right.mask, expected_right)
    assert left.bbox == (2, 5, 12, 15) and left.area == 100 and left.kind == "directional"
    assert by_text["a dog"].kind == "plain" and by_text["a dog"].area == 13 * 20
    # the cows overlap in rows 5..15, so neither is "at the top"/"at the bottom"
    assert not any("top" in t or "bottom" in t for t in by_text)


def test_builder_is_deterministic_and_orders_by_class_then_direction():
    mask = two_cows_one_dog()
    a = expressions_of_mask("img", mask, VOC, min_area=20)
    b = expressions_of_mask("img", mask, VOC, min_area=20)
    assert [e.to_record() for e in a] == [e.to_record() for e in b]
    assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a, b))
    assert [e.text for e in a] == ["the cow on the left", "the cow on the right", "a dog"]


def test_separated_is_bbox_end_at_or_before_every_other_start():
    # boxes (x0, y0, x1, y1), x1 exclusive: touching boxes (x1 == other x0) count as separated
    assert separated_extremes([(0, 0, 5, 5), (5, 0, 9, 5)]) == {"left": 0, "right": 1}
    # overlapping by one column along x and along y: nothing is separated
    assert separated_extremes([(0, 0, 6, 6), (5, 5, 9, 9)]) == {}
    # three boxes: only the leftmost is clear of both others; the middle and right overlap
    assert separated_extremes([(0, 0, 3, 3), (4, 0, 8, 3), (7, 0, 10, 3)]) == {"left": 0}
    # stacked along y
    assert separated_extremes([(0, 6, 4, 9), (0, 0, 4, 5)]) == {"top": 1, "bottom": 0}
    assert separated_extremes([(0, 0, 4, 4)]) == {}


def test_min_area_drops_fragments_and_ignore_border_splits_components():
    mask = np.zeros((20, 20), np.uint8)
    mask[2:12, 2:12] = DOG + 1
    mask[15:17, 15:17] = DOG + 1  # 4 px fragment
    assert [e.text for e in expressions_of_mask("x", mask, VOC, min_area=10)] == ["a dog"]
    assert [e.text for e in expressions_of_mask("x", mask, VOC, min_area=1)] == [
        "the dog on the left", "the dog on the right", "the dog at the top", "the dog at the bottom"]
    # a 255 column through one object: two components (255 is not the class)
    mask = np.zeros((10, 21), np.uint8)
    mask[2:8, 1:20] = CLASS_NAMES.index("aeroplane") + 1
    mask[:, 10] = 255
    texts = [e.text for e in expressions_of_mask("x", mask, VOC, min_area=5)]
    assert texts == ["the aeroplane on the left", "the aeroplane on the right"]
    mask[:, 10] = 1 + CLASS_NAMES.index("aeroplane")
    mask[:2] = 0
    mask[8:] = 0
    assert [e.text for e in expressions_of_mask("x", mask, VOC, min_area=5)] == ["an aeroplane"]


def test_readable_names_in_text():
    mask = np.zeros((10, 10), np.uint8)
    mask[2:8, 2:8] = CLASS_NAMES.index("diningtable") + 1
    assert expressions_of_mask("x", mask, VOC, min_area=1)[0].text == "a dining table"


def _expr(mask: np.ndarray, kind: str) -> Expression:
    return Expression("x", "t", kind, 0, "aeroplane", (0, 0, 1, 1), int(mask.sum()), mask.astype(bool))


def test_evaluate_matches_hand_computed_miou_and_oiou():
    t1 = np.zeros((4, 4), bool); t1[:2, :2] = True  # area 4
    p1 = np.zeros((4, 4), bool); p1[:2, :1] = True  # inter 2, union 4 -> 0.5
    t2 = np.zeros((4, 4), bool); t2[:, :] = True  # area 16
    p2 = np.zeros((4, 4), bool); p2[:1, :] = True  # inter 4, union 16 -> 0.25
    t3 = np.zeros((4, 4), bool); t3[3, 3] = True
    p3 = np.zeros((4, 4), bool); p3[0, 0] = True  # inter 0, union 2 -> 0
    result = evaluate([p1, p2, p3], [_expr(t1, "plain"), _expr(t2, "directional"), _expr(t3, "plain")])
    assert result["n"] == 3
    assert result["miou"] == pytest.approx(100 * (0.5 + 0.25 + 0) / 3)
    assert result["oiou"] == pytest.approx(100 * (2 + 4 + 0) / (4 + 16 + 2))
    assert result["by_kind"]["plain"] == pytest.approx({"miou": 25.0, "oiou": 100 * 2 / 6, "n": 2})
    assert result["by_kind"]["directional"] == pytest.approx({"miou": 25.0, "oiou": 25.0, "n": 1})
    with pytest.raises(ValueError, match="one per expression"):
        evaluate([p1], [_expr(t1, "plain"), _expr(t2, "plain")])


def test_save_expressions_writes_json_lines(tmp_path):
    exprs = expressions_of_mask("img", two_cows_one_dog(), VOC, min_area=20)
    path = tmp_path / "expr.jsonl"
    save_expressions(path, exprs)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows[0] == {"id": "img", "text": "the cow on the left", "kind": "directional", "class": "cow",
                       "bbox": [2, 5, 12, 15], "area": 100}
    assert len(rows) == 3


def test_real_voc_mini_targets_are_class_components(voc_mini, voc_data):
    from vocmini import mask_path, read_mask
    ids = read_split(voc_mini, "val")[:10]
    exprs = build_expressions(voc_data, ids)
    assert exprs and {e.kind for e in exprs} <= {"plain", "directional"}
    for e in exprs:
        gt = read_mask(mask_path(voc_mini, e.id))
        assert e.mask.shape == gt.shape and e.mask.sum() == e.area >= 800
        assert np.all(gt[e.mask] == e.class_index + 1)
        assert readable(CLASS_NAMES[e.class_index]) in e.text and e.class_name == CLASS_NAMES[e.class_index]
    # images without a mask give no expression
    no_masks = voc_data.__class__(**{**voc_data.__dict__, "masks": {}})
    assert build_expressions(no_masks, ids) == []


def test_expressions_use_the_datasets_own_class_names():
    from textwsss.data.classes import ClassList

    classes = ClassList.of(["red_panda", "kayak"])
    mask = np.zeros((20, 20), np.uint8)
    mask[2:10, 2:10] = 1
    mask[12:18, 3:17] = 2
    exprs = expressions_of_mask("x", mask, classes, min_area=5)
    assert [(e.text, e.class_name) for e in exprs] == [("a red panda", "red_panda"), ("a kayak", "kayak")]
