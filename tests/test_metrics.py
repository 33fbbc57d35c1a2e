import numpy as np
import pytest

from textwsss.metrics import ConfusionMatrix, mask_iou, referring_scores


def test_confusion_matrix_hand_computed_with_ignore():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0]])
    cm = ConfusionMatrix(["bg", "a", "b"])
    cm.update(pred, gt)
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    np.testing.assert_array_equal(cm.matrix, expected)
    s = cm.summary()
    # IoU bg = 1 / (2 + 2 - 1) = 1/3; a = 2 / (2 + 3 - 2) = 2/3; b = 1 / (2 + 1 - 1) = 1/2
    assert s["per_class"]["bg"] == pytest.approx(100 / 3, abs=1e-3)
    assert s["per_class"]["a"] == pytest.approx(200 / 3, abs=1e-3)
    assert s["per_class"]["b"] == pytest.approx(50, abs=1e-3)
    assert s["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert s["pixel_acc"] == pytest.approx(100 * 4 / 6)
    assert s["absent"] == []


def test_absent_classes_are_excluded_and_listed():
    gt = np.array([[0, 1]])
    pred = np.array([[0, 1]])
    cm = ConfusionMatrix(["bg", "a", "b", "c"])
    cm.update(pred, gt)
    s = cm.summary()
    assert s["miou"] == pytest.approx(100.0)
    assert s["absent"] == ["b", "c"]
    assert s["per_class"]["b"] is None


def test_class_only_predicted_counts_as_zero():
    cm = ConfusionMatrix(["bg", "a", "b"])
    cm.update(np.array([[0, 2]]), np.array([[0, 0]]))
    s = cm.summary()
    assert s["per_class"]["b"] == 0.0  # predicted but never true: IoU 0, included in the mean
    assert s["miou"] == pytest.approx(100 * (0.5 + 0) / 2)


def test_accumulates_over_split_not_per_image():
    cm = ConfusionMatrix(["bg", "a"])
    cm.update(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))  # IoU a = 1 on this image
    cm.update(np.array([[1]]), np.array([[0]]))  # IoU a = 0 on this one (and bg 0)
    assert cm.summary()["per_class"]["a"] == pytest.approx(100 * 4 / 5)


def test_bad_inputs():
    cm = ConfusionMatrix(["bg", "a", "b"])
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="prediction values"):
        cm.update(np.array([[5]]), np.array([[0]]))
    cm.update(np.array([[5]]), np.array([[255]]))  # an ignored pixel is not scored


def test_ground_truth_outside_the_classes_is_refused_and_nothing_counted():
    # 3 labels, a ground-truth 3 (a mask of a larger class list): without the check numpy fails on the reshape of
    # the bincount, with a message that names neither the ground truth nor the values expected
    cm = ConfusionMatrix(["bg", "a", "b"])
    with pytest.raises(ValueError, match=r"ground-truth values must lie in 0\.\.2 or be 255, got 3"):
        cm.update(np.array([[0, 1]]), np.array([[3, 1]]))
    np.testing.assert_array_equal(cm.matrix, np.zeros((3, 3)))
    cm.update(np.array([[0, 2]]), np.array([[2, 255]]))  # 2 is the last valid label, 255 ignored
    np.testing.assert_array_equal(cm.matrix, [[0, 0, 0], [0, 0, 0], [1, 0, 0]])


def test_referring_miou_and_oiou():
    a = np.zeros((4, 4), bool); a[:2, :2] = True
    b = np.zeros((4, 4), bool); b[:2, :] = True
    inter, union = mask_iou(a, b)
    assert (inter, union) == (4, 8)
    scores = referring_scores([(4, 8), (1, 1), (0, 3)])
    assert scores["miou"] == pytest.approx(100 * (0.5 + 1 + 0) / 3)
    assert scores["oiou"] == pytest.approx(100 * 5 / 12)
    assert scores["n"] == 3


def test_mask_iou_of_masks_that_each_have_a_pixel_the_other_lacks():
    # prediction {0, 1}, ground truth {1, 2}: intersection {1}, union {0, 1, 2}; any non-zero value is "in"
    assert mask_iou([1, 1, 0], [0, 1, 1]) == (1, 3)
    assert mask_iou(np.array([3, 7, 0]), np.array([0, 255, 2])) == (1, 3)
    with pytest.raises(ValueError, match=r"^mask shapes differ: \(2,\) vs \(3,\)$"):
        mask_iou([1, 0], [1, 0, 0])


def test_referring_scores_of_empty_unions_and_of_no_samples():
    # an empty union (nothing to find, nothing predicted) counts IoU 1, a miss of a 1-pixel object IoU 0
    scores = referring_scores([(0, 0), (0, 1)])
    assert scores == {"miou": 50.0, "oiou": 0.0, "n": 2}
    # every union empty: oIoU is 100 (0 / 0 would be NaN), mIoU too
    assert referring_scores([(0, 0)]) == {"miou": 100.0, "oiou": 100.0, "n": 1}
    assert referring_scores([]) == {"miou": 0.0, "oiou": 0.0, "n": 0}


def test_one_label_matrix_and_integer_counts():
    cm = ConfusionMatrix(["bg"])  # a single label is a valid (if trivial) matrix
    cm.update(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    assert cm.matrix.dtype == np.int64 and cm.matrix.tolist() == [[4]]
    with pytest.raises(ValueError, match=r"^ConfusionMatrix: expected at least one label name$"):
        ConfusionMatrix([])


def test_merge_adds_the_counts_of_another_matrix():
    # the per-rank matrices of a distributed evaluation: merged, they equal one matrix fed both inputs
    a, b = ConfusionMatrix(["bg", "a"]), ConfusionMatrix(["bg", "a"])
    a.update(np.array([[0, 1, 1]]), np.array([[0, 0, 1]]))  # cells (0,0), (0,1), (1,1)
    b.update(np.array([[1, 0]]), np.array([[1, 1]]))  # cells (1,1), (1,0)
    a.merge(b)
    np.testing.assert_array_equal(a.matrix, [[1, 1], [1, 2]])
    np.testing.assert_array_equal(b.matrix, [[0, 0], [1, 1]])  # the other matrix is left as it was


def test_summary_of_an_empty_matrix_has_no_nan():
    s = ConfusionMatrix(["bg", "a"]).summary()
    assert s == {"miou": 0.0, "pixel_acc": 0.0, "per_class": {"bg": None, "a": None}, "absent": ["bg", "a"]}


def test_per_class_iou_is_rounded_to_four_decimals():
    cm = ConfusionMatrix(["bg", "a", "b"])
    cm.update(np.array([[0, 1, 1, 1], [2, 0, 2, 0]]), np.array([[0, 0, 1, 1], [2, 2, 255, 255]]))
    # bg 1/3, a 2/3, b 1/2 (test_confusion_matrix_hand_computed_with_ignore): 4 decimals, exactly
    assert cm.summary()["per_class"] == {"bg": 33.3333, "a": 66.6667, "b": 50.0}


def test_prediction_equal_to_the_number_of_labels_is_refused():
    cm = ConfusionMatrix(["bg", "a"])
    with pytest.raises(ValueError, match=r"^prediction values must lie in 0\.\.1 on scored pixels, got 0\.\.2$"):
        cm.update(np.array([[0, 2]]), np.array([[0, 1]]))
    with pytest.raises(ValueError, match=r"^prediction values must lie in 0\.\.1 on scored pixels, got -1\.\.0$"):
        cm.update(np.array([[-1, 0]]), np.array([[0, 1]]))
    np.testing.assert_array_equal(cm.matrix, np.zeros((2, 2)))
