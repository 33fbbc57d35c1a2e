"""Dense zero-shot GradCAM baseline with tiny open_clip models and the imagenet stand-in."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textwsss.guide.imagenet_matcher import ImageNetMatcher
from textwsss.guide.open_clip_matcher import OpenClipMatcher
from textwsss.guide.tiny import register_tiny_configs
from vocmini import CLASS_NAMES, image_path, labels_of_mask, mask_path, read_image, read_mask, readable
from textwsss.zeroshot.gradcam import zeroshot_cams

register_tiny_configs()
CONCEPTS = [readable(c) for c in CLASS_NAMES]


@pytest.mark.parametrize("arch", ["tiny-vit", "tiny-rn"])
def test_open_clip_cams_have_image_shape_and_range(arch):
    torch.manual_seed(0)
    matcher = OpenClipMatcher(arch, pretrained="none")
    image = (np.random.default_rng(0).random((37, 51, 3)) * 255).astype(np.uint8)
    cams = zeroshot_cams(matcher, image, [7, 11], CONCEPTS, ["tree", "sky"])
    assert cams.shape == (2, 37, 51) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
    for cam in cams:  # per-class max normalisation (one class's CAM may be all zero for random weights)
        assert cam.max() == pytest.approx(1.0) or cam.max() == 0.0
    # The softmax probabilities of the concepts sum to 1, so their gradients, channel weights and GradCAM maps
    # before the ReLU sum to 0 at every pixel: when all concepts are classes of the image, every pixel is claimed
    # by at least one class, whatever the weights. An all-zero CAM cannot pass this.
    every = zeroshot_cams(matcher, image, [7, 11, 14], CONCEPTS, [])
    assert (every.max(axis=0) > 0).all()
    assert zeroshot_cams(matcher, image, [], CONCEPTS, []).shape == (0, 37, 51)
    with pytest.raises(ValueError, match="class_indices"):
        zeroshot_cams(matcher, image, [20], CONCEPTS, [])


# one image per class that ImageNet knows well; the CAM must put more mass inside the object
@pytest.mark.parametrize("image_id", ["2007_002760", "2008_001498", "2008_001876"])
def test_imagenet_cam_is_higher_inside_the_object(voc_mini, image_id):
    matcher = ImageNetMatcher()
    image = read_image(image_path(voc_mini, image_id))
    mask = read_mask(mask_path(voc_mini, image_id))
    classes = labels_of_mask(mask)
    assert {"cat", "dog"} & {CLASS_NAMES[k] for k in classes}
    cams = zeroshot_cams(matcher, image, classes, CONCEPTS, ["sea", "mountain", "building"])
    assert cams.shape == (len(classes), *image.shape[:2])
    assert cams.max() == pytest.approx(1.0)
    for cam, k in zip(cams, classes):
        if CLASS_NAMES[k] not in ("cat", "dog"):
            continue
        inside = cam[mask == k + 1].mean()
        outside = cam[(mask != k + 1) & (mask != 255)].mean()
        assert inside > 2 * outside, (CLASS_NAMES[k], inside, outside)


# ---- label-free class choice -------------------------------------------------------------------------------
def test_presence_class_f1_edge_cases_by_hand():
    from textwsss.zeroshot.presence import class_f1

    assert class_f1([[]], [[]]) == 100.0  # nothing to find and nothing claimed
    assert class_f1([[0, 1]], [[0, 2]]) == pytest.approx(50.0)  # tp 1 of 2 predicted, 2 true: 2 x 1 / 4


class _IntensityMatcher:
    """A stand-in matcher by hand: an image's feature is (mean of its squared pixel values in [0, 1], 0, 0) and the
    concepts are the unit vectors, so the logits are (m, 0, 0): p(first concept) = e^m / (e^m + 2)."""
    input_size, device = 2, "cpu"

    def encode_concepts(self, concepts):
        return torch.eye(len(concepts))

    def encode_images(self, x):
        assert x.shape[1:] == (3, 2, 2), x.shape
        return torch.stack([(x ** 2).mean((1, 2, 3)), torch.zeros(len(x)), torch.zeros(len(x))], 1)

    def logits(self, image_feats, concept_feats):
        return image_feats @ concept_feats.T


def test_presence_scores_by_hand_with_a_stand_in_matcher():
    from textwsss.zeroshot.presence import presence_scores

    white = np.full((4, 4, 3), 255, np.uint8)  # m = 1
    # a ramp 0, 85, 170, 255 along each row, resized to 2 x 2 (pixel centres, bilinear): 42.5 and 212.5, so
    # m = ((1/6)^2 + (5/6)^2) / 2 = 13/36
    ramp = np.tile(np.array([0, 85, 170, 255], np.uint8)[None, :, None], (2, 1, 3))
    scores = presence_scores(_IntensityMatcher(), [white, ramp], ["a", "b"], ["sea"], batch_size=1)
    p = [np.exp(m) / (np.exp(m) + 2) for m in (1.0, 13 / 36)]
    assert scores.shape == (2, 2) and scores.dtype == np.float32
    np.testing.assert_allclose(scores[:, 0], p, rtol=1e-6)
    np.testing.assert_allclose(scores[:, 1], [1 / (np.exp(m) + 2) for m in (1.0, 13 / 36)], rtol=1e-6)
    empty = presence_scores(_IntensityMatcher(), [], ["a", "b"], ["sea"])
    assert empty.shape == (0, 2) and empty.dtype == np.float32


def test_presence_rules_by_hand():
    from textwsss.zeroshot.presence import class_f1, predict_classes, tune_presence_threshold

    scores = np.array([[0.9, 0.05, 0.3], [0.1, 0.2, 0.15], [0.5, 0.6, 0.01]])
    assert predict_classes(scores, 0.4) == [[0], [1], [0, 1]]  # image 1: nothing reaches 0.4, its best class
    assert predict_classes(scores, 0.25) == [[0, 2], [1], [0, 1]]
    # tp 3 of 4 predicted, 3 true -> F1 = 2 * 3 / (4 + 3)
    assert class_f1([[0, 2], [1], [0]], [[0], [1], [0]]) == pytest.approx(200 * 3 / 7)
    threshold, f1 = tune_presence_threshold(scores, [[0], [1], [0, 1]])
    # F1 100 for every threshold in (0.3, 0.5] (image 0 must drop class 2 at 0.3, image 2 keep class 0 at 0.5):
    # the documented choice among ties is the lowest grid point, 0.32 of 0.02, 0.04, ...
    assert f1 == pytest.approx(100.0) and threshold == pytest.approx(0.32)


def test_presence_threshold_ties_go_to_the_lowest_threshold():
    from textwsss.zeroshot.presence import tune_presence_threshold

    scores = np.array([[0.9, 0.1], [0.2, 0.7]])
    # 0.3, 0.5, 0.7 and 0.8 all give F1 100 (at 0.8 image 1 falls back to its best class), 0.1 adds a wrong
    # class; the order of the grid must not matter
    assert tune_presence_threshold(scores, [[0], [1]], grid=(0.7, 0.5, 0.1, 0.3, 0.8)) == (0.3, pytest.approx(100))
    # F1 at 0.1: tp 2 of 4 predicted, 2 true -> 2 * 2 / 6
    assert tune_presence_threshold(scores, [[0], [1]], grid=(0.1,)) == (0.1, pytest.approx(200 * 2 / 6))


def test_imagenet_stand_in_finds_the_classes_without_labels(voc_data):
    from textwsss.zeroshot.presence import class_f1, predict_classes, presence_scores, tune_presence_threshold

    ids = voc_data.ids("train")[:40]
    matcher = ImageNetMatcher()
    scores = presence_scores(matcher, [voc_data.read_image(i) for i in ids], list(voc_data.classes.prompts), ["sea"])
    assert scores.shape == (40, 20) and (scores.sum(1) <= 1 + 1e-5).all()
    labels = [voc_data.labels[i] for i in ids]
    threshold, f1 = tune_presence_threshold(scores, labels)
    person = voc_data.classes.index("person")
    always_person = class_f1([[person]] * len(ids), labels)  # the most frequent class for every image
    assert f1 > always_person + 20, (f1, always_person)
    assert class_f1(predict_classes(scores, threshold), labels) == pytest.approx(f1)


def _plain_presence(matcher, images, prompts, background):
    """Softmax over [class prompts + background words] of the matcher's logits, in numpy, one image at a time."""
    concept_feats = matcher.encode_concepts(list(prompts) + list(background))
    rows = []
    for image in images:
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255
        x = F.interpolate(x, size=(matcher.input_size,) * 2, mode="bilinear", align_corners=False)
        with torch.no_grad():
            logits = matcher.logits(matcher.encode_images(x), concept_feats)[0].double().numpy()
        e = np.exp(logits - logits.max())
        rows.append((e / e.sum())[:len(prompts)])
    return rows


def _plain_choice(rows, threshold):
    return [[k for k, v in enumerate(row) if v >= threshold] or [int(np.argmax(row))] for row in rows]


def _plain_f1(predicted, labels):
    tp = sum(len(set(p) & set(t)) for p, t in zip(predicted, labels))
    return 200 * tp / (sum(map(len, predicted)) + sum(map(len, labels)))


def test_label_free_baseline_picks_classes_as_the_class_gate(voc_data):
    """zeroshot.json's label_free: the classes come from a presence threshold tuned on the train images' labels
    (never val's), the val images get the classes that threshold picks, and the scores follow from them.
    Expected values from a plain computation (numpy softmax, a loop over the thresholds), not the library's."""
    from textwsss.params import load_params
    from textwsss.pipeline.zeroshot import evaluate_label_free

    params = load_params()
    params = params.model_copy(update={"zeroshot": params.zeroshot.model_copy(update={"max_side": 128})})
    tune_ids, val_ids = voc_data.ids("score")[:8], voc_data.with_masks(voc_data.ids("val"))[:5]
    matcher = ImageNetMatcher()
    got = evaluate_label_free(params, matcher, voc_data, tune_ids, val_ids)

    background = matcher.check_concepts(params.zeroshot.background_words, background=True)
    assert background, "the imagenet stand-in knows some of the background words"
    prompts = list(voc_data.classes.prompts)
    tune_rows = _plain_presence(matcher, [voc_data.read_image(i) for i in tune_ids], prompts, background)
    tune_labels = [voc_data.labels[i] for i in tune_ids]
    best_t, best_f1 = None, -1.0
    for t in np.round(np.arange(0.02, 0.96, 0.02), 2):  # ascending: a later tie does not replace the first
        f1 = _plain_f1(_plain_choice(tune_rows, t), tune_labels)
        if f1 > best_f1 + 1e-9:
            best_t, best_f1 = float(t), f1
    assert got["presence_threshold"] == pytest.approx(best_t) and got["class_f1_train"] == pytest.approx(best_f1)
    val_rows = _plain_presence(matcher, [voc_data.read_image(i) for i in val_ids], prompts, background)
    val_f1 = _plain_f1(_plain_choice(val_rows, best_t), [voc_data.labels[i] for i in val_ids])
    assert got["class_f1_val"] == pytest.approx(val_f1)
    assert got["background_threshold"] in [pytest.approx(t) for t in params.zeroshot.thresholds.values()]
    assert (got["n_tune_images"], got["n_images"]) == (8, 5)
    assert 0 < got["miou"] < 100 and 0 < got["pixel_acc"] < 100
