"""The segmentation losses' edge cases, each against a hand computation: the resizing of logits and targets,
the shape and value checks (their messages name what was expected), and which classes CRIS samples draw."""
import math

import numpy as np
import pytest
import torch

from textwsss.losses.segmentation import cris_samples, cross_entropy, label_counts, text_to_pixel_loss


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_cross_entropy_resizes_the_logits_bilinearly_to_the_target():
    # class-0 minus class-1 logit [0, 4] over 2 columns, upsampled to 4 (align_corners=False): source columns
    # -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1) -> margins 0, 1, 3, 4
    logits = torch.tensor([[[[0.0, 4.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    target = torch.zeros(1, 1, 4, dtype=torch.long)
    expected = sum(_softplus(-m) for m in (0.0, 1.0, 3.0, 4.0)) / 4
    assert cross_entropy(logits, target).item() == pytest.approx(expected, abs=1e-6)


def test_cross_entropy_names_the_shapes_it_expected():
    with pytest.raises(ValueError, match=r"expected logits \(B,C,H,W\) and target \(B,H,W\), got \(2, 3, 4\) "
                                         r"and \(2, 3, 4\)"):
        cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got \(1, 2, 2, 2\) and \(2, 2\)"):
        cross_entropy(torch.zeros(1, 2, 2, 2), torch.zeros(2, 2, dtype=torch.long))


def test_cross_entropy_other_ignore_index():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])
    # 7 ignored, 255 would be an invalid class: only pixel 0 (class 0, margin 2) counts
    assert cross_entropy(logits, torch.tensor([[[0, 7]]]), ignore_index=7).item() == pytest.approx(_softplus(-2.0))
    assert cross_entropy(logits, torch.tensor([[[7, 7]]]), ignore_index=7).item() == 0.0


def test_label_counts_only_counts_the_labels_asked_for(tmp_path):
    from textwsss.io import save_label_png

    save_label_png(tmp_path / "a.png", np.array([[0, 2, 2, 7], [255, 1, 9, 0]], np.uint8))
    assert label_counts([tmp_path / "a.png"], 3).tolist() == [2, 1, 2]  # 7 and 9 lie beyond, 255 is ignored
    assert label_counts([], 2).tolist() == [0, 0]


def test_text_to_pixel_loss_takes_b_h_w_logits_and_another_ignore_index():
    logits = torch.tensor([[[0.0, 2.0], [-1.0, 3.0]]])  # (1, 2, 2)
    target = torch.tensor([[[1, 0], [0, 9]]])
    expected = (math.log(2) + _softplus(2.0) + _softplus(-1.0)) / 3  # 9 ignored
    assert text_to_pixel_loss(logits, target, ignore_index=9).item() == pytest.approx(expected, abs=1e-6)
    assert text_to_pixel_loss(logits[:, None], target, ignore_index=9).item() == pytest.approx(expected, abs=1e-6)
    assert text_to_pixel_loss(logits, torch.full((1, 2, 2), 9), ignore_index=9).item() == 0.0


def test_text_to_pixel_loss_nearest_resizes_the_target_up():
    # a (1, 1) target on (2, 2) logits: every pixel gets its label, none a blend
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])
    expected = (math.log(2) + _softplus(-2.0) + _softplus(1.0) + _softplus(-3.0)) / 4
    assert text_to_pixel_loss(logits, torch.tensor([[[1]]])).item() == pytest.approx(expected, abs=1e-6)


def test_text_to_pixel_loss_names_what_it_expected():
    with pytest.raises(ValueError, match=r"mask_logits: expected \(B,1,h,w\), got \(1, 2, 2, 2\)"):
        text_to_pixel_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target: expected \(B,H,W\) with B=1, got \(2, 2, 2\)"):
        text_to_pixel_loss(torch.zeros(1, 1, 2, 2), torch.zeros(2, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target: expected \(B,H,W\) with B=1, got \(2, 2\)"):
        text_to_pixel_loss(torch.zeros(1, 1, 2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target: expected values in \{0, 1, 255\}, got \[2, 3\]"):
        text_to_pixel_loss(torch.zeros(1, 1, 2, 2), torch.tensor([[[3, 0], [2, 255]]]))


def test_cris_samples_class_range_and_tensor_input():
    # 20 is the last class (k = 19); 21 lies beyond num_classes=20 and is no class
    label_map = np.array([[20, 21], [1, 255]], np.uint8)
    samples = cris_samples(label_map)
    assert [k for k, _ in samples] == [0, 19]
    np.testing.assert_array_equal(samples[1][1], [[1, 0], [0, 255]])
    assert samples[1][1].dtype == np.uint8
    from_tensor = cris_samples(torch.from_numpy(label_map))
    assert [k for k, _ in from_tensor] == [0, 19]
    np.testing.assert_array_equal(from_tensor[0][1], samples[0][1])
    assert [k for k, _ in cris_samples(label_map, num_classes=21)] == [0, 19, 20]


def test_cris_negatives_are_every_absent_class_at_most_once():
    label_map = np.array([[0, 1], [3, 255]], np.uint8)  # classes 0 and 2 of 4
    samples = cris_samples(label_map, np.random.default_rng(0), num_classes=4, negatives=5)
    assert sorted(k for k, _ in samples[2:]) == [1, 3]  # only 2 absent classes, each once
    for _, t in samples[2:]:
        assert t.dtype == np.uint8
        np.testing.assert_array_equal(t, [[0, 0], [0, 255]])
    one = cris_samples(label_map, np.random.default_rng(0), num_classes=4, negatives=1)
    assert len(one) == 3 and one[2][0] in (1, 3)
    assert len(cris_samples(label_map, num_classes=4, negatives=0)) == 2  # no rng needed without negatives


def test_cris_samples_names_what_it_expected():
    with pytest.raises(ValueError, match=r"label_map: expected an \(H,W\) label map, got shape \(1, 2, 2\)"):
        cris_samples(np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="rng: a numpy Generator is needed to draw negatives"):
        cris_samples(np.zeros((2, 2), np.uint8), negatives=1)
