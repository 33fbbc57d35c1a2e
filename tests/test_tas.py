"""TAS: rectifier, scores, proposals, captioner helpers and the end-to-end pipeline."""
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textwsss.synthetic import make_scenes
from textwsss.tas.captioner import build_captioner, is_synonym, noun_phrases
from textwsss.tas.nouns import target_noun
from textwsss.tas.segmenter import prepare_image, segment_expression
from textwsss.tas.proposals import SamProposer, SuperpixelProposer, build_proposer, label_map_components
from textwsss.tas.rectifier import direction_of, rectify
from textwsss.tas.scoring import caption_negatives, combine_scores, crop_masked, score_masks
from vocmini import PROMPTS, CLASS_NAMES, image_path, mask_path, read_image, read_mask, read_split

COLOURS = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0], "blue": [0.0, 0.0, 1.0]}


class ColourMatcher(torch.nn.Module):
    """Fake closed-vocabulary matcher: image feature = mean colour of the non-black pixels,
    concept feature = a colour vector, similarity = cosine."""

    input_size = 16

    def __init__(self, open_vocabulary: bool = False):
        super().__init__()
        self.open_vocabulary = open_vocabulary
        self.image_calls = 0

    def encode_images(self, images):
        self.image_calls += 1
        lit = (images.sum(1, keepdim=True) > 0).float()
        return (images * lit).sum((2, 3)) / lit.sum((2, 3)).clamp(min=1)

    def _vector(self, concept):
        if concept in COLOURS:
            return COLOURS[concept]
        if self.open_vocabulary:  # free text: the colour it mentions, else grey
            return next((vec for word, vec in COLOURS.items() if word in concept), [1 / 3, 1 / 3, 1 / 3])
        raise ValueError(f"unknown concept {concept!r}")

    def encode_concepts(self, concepts):
        return torch.tensor([self._vector(c) for c in concepts])

    def similarity(self, image_feats, concept_feats):
        return (F.normalize(image_feats, dim=-1) @ F.normalize(concept_feats, dim=-1).T).clamp(1e-4, 0.9999)

    def check_concepts(self, concepts, *, background):
        for c in concepts:
            self._vector(c)
        return list(concepts)


def square(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# ---- rectifier ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("the dog on the left", "left"), ("leftmost cat", "left"), ("cat on the left side", "left"),
    ("the rightmost car", "right"), ("man at the top", "top"), ("upper shelf", "top"), ("bird above", "top"),
    ("top-most plant", "top"), ("the bottom-most chair", "bottom"), ("lower boat", "bottom"),
    ("sheep below", "bottom"), ("looking down", "bottom"), ("an upright piano", None),
    ("a bright red car", None), ("the copyright sign", None), ("a dog", None), ("sitting UP", "top"),
])
def test_direction_words(text, expected):
    assert direction_of(text) == expected


def test_rectifier_picks_best_mask_on_the_named_side():
    h, w = 20, 40
    masks = np.stack([square(h, w, 8, 18, 0, 8),     # left, bottom, score 0.5
                      square(h, w, 8, 18, 30, 40),   # right, bottom, best score 0.9
                      square(h, w, 0, 6, 10, 16)])   # left, score 0.7
    scores = np.array([0.5, 0.9, 0.7])
    assert rectify(masks, scores, None) == 1
    assert rectify(masks, scores, "left") == 2
    assert rectify(masks, scores, "right") == 1
    assert rectify(masks, scores, "top") == 2        # only mask 2's centroid (y=2.5) is above y=10
    assert rectify(masks, scores, "bottom") == 1     # masks 0 and 1 (y=12.5) are in the bottom half

def test_rectifier_fallback_takes_the_most_extreme_of_the_top_scores():
    h, w = 20, 40
    masks = np.stack([square(h, w, 0, 20, 30, 40), square(h, w, 0, 20, 22, 30),
                      square(h, w, 0, 20, 20, 24), square(h, w, 0, 20, 38, 40)])
    scores = np.array([0.9, 0.8, 0.1, 0.7])
    # nothing in the left half: among the 3 best (0, 1, 3) the leftmost centroid is mask 1;
    # mask 2 is further left but not among the top 3
    assert rectify(masks, scores, "left", fallback_top_k=3) == 1
    assert rectify(masks, scores, "left", fallback_top_k=4) == 2
    with pytest.raises(ValueError):
        rectify(masks, scores, "middle")


# ---- scores ---------------------------------------------------------------------------------
def test_combine_scores_formula():
    s_v, s_p, s_n = np.array([0.5, 0.2]), np.array([0.1, 0.9]), np.array([-0.3, -0.1])
    np.testing.assert_allclose(combine_scores(s_v, s_p, s_n, alpha=0.1, lam=1.0), [0.21, 0.19])
    np.testing.assert_allclose(combine_scores(s_v, None, s_n, alpha=0.1, lam=0.1), [0.47, 0.19])
    np.testing.assert_allclose(combine_scores(s_v, s_p, None, alpha=0.5, lam=0.1), [0.55, 0.65])


def test_crop_masked_blanks_outside_and_crops_to_square_box():
    image = np.full((6, 8, 3), 200, np.uint8)
    image[1, 2] = (255, 0, 0)
    mask = np.zeros((6, 8), bool)
    mask[1:3, 2:3] = True  # a 2x1 box
    crop = crop_masked(image, mask, margin=0.0)
    assert crop.shape == (3, 2, 2)
    np.testing.assert_allclose(crop[:, 0, 0].numpy(), [1.0, 0, 0])  # the red pixel, padded on the right
    np.testing.assert_allclose(crop[:, 1, 0].numpy(), [200 / 255] * 3, atol=1e-6)
    assert float(crop[:, :, 1].abs().sum()) == 0.0  # the pad column is zero fill
    mean_fill = crop_masked(image, mask, margin=0.0, fill="mean")
    np.testing.assert_allclose(mean_fill[:, 0, 1].numpy(), image.reshape(-1, 3).mean(0) / 255, atol=1e-6)


def two_colour_image():
    image = np.zeros((32, 48, 3), np.uint8)
    image[:] = (0, 200, 0)
    image[4:14, 4:14] = (220, 0, 0)     # red on the left
    image[18:30, 32:44] = (230, 10, 0)  # red on the right
    image[20:28, 12:20] = (0, 0, 210)   # blue
    masks = np.stack([square(32, 48, 4, 14, 4, 14), square(32, 48, 18, 30, 32, 44),
                      square(32, 48, 20, 28, 12, 20), ~square(32, 48, 0, 0, 0, 0)])
    return image, masks


def test_score_masks_prefers_the_named_colour_in_one_batched_call():
    image, masks = two_colour_image()
    matcher = ColourMatcher()
    scores = score_masks(image, masks, "red", matcher, negatives=["green"], lam=1.0)
    assert matcher.image_calls == 1
    assert scores["s_p"] is None
    assert scores["s_v"][0] > 0.99 and scores["s_v"][2] < 0.01
    # the whole-image mask is mostly green: the N-score (negative green) pushes it down
    assert scores["s_n"][3] < scores["s_n"][0]
    np.testing.assert_allclose(scores["s"], scores["s_v"] + scores["s_n"])
    assert int(np.argmax(scores["s"])) in (0, 1)


class FixedCaptioner:
    def __init__(self, text):
        self.text = text

    def caption(self, image):
        return self.text


def test_p_score_uses_text_cosine_of_crop_captions():
    image, masks = two_colour_image()
    matcher = ColourMatcher(open_vocabulary=True)
    scores = score_masks(image, masks, "red", matcher, captioner=FixedCaptioner("a blue thing"), alpha=0.5)
    np.testing.assert_allclose(scores["s_p"], 0.0, atol=1e-6)  # cos(blue, red) = 0
    scores = score_masks(image, masks, "red", matcher, captioner=FixedCaptioner("red"), alpha=0.5)
    np.testing.assert_allclose(scores["s"], scores["s_v"] + 0.5)


def test_negatives_from_caption_drop_target_synonyms():
    assert noun_phrases("a man riding a brown horse on the beach.") == ["man", "brown horse", "beach"]
    assert caption_negatives("a man and a puppy next to a dog on the grass", "dog") == ["man", "grass"]
    assert caption_negatives("a man and a puppy", "dog", vocabulary=list(CLASS_NAMES)) == ["person"]
    assert is_synonym("television", "tv monitor") and is_synonym("dogs", "dog")
    assert not is_synonym("car", "bus")


def test_target_noun():
    vocab = list(PROMPTS) + ["sea"]  # the stage's vocabulary: the classes' prompt names and background words
    assert target_noun("the dog on the left", vocab) == "dog"
    assert target_noun("a dining table", vocab) == "dining table"
    assert target_noun("two cows near the sea", vocab) == "cow"  # longest spelling wins: "cows" over "sea"
    assert target_noun("the tv monitor on the right", vocab) == "tv monitor"
    assert target_noun("a red panda", ["red_panda", "kayak"]) == "red_panda"
    assert target_noun("the man on the left", vocab) == "person"  # via the synonym table
    with pytest.raises(ValueError, match="hotdog"):
        target_noun("a hotdog", vocab)


def test_build_captioner_off_logs_one_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert build_captioner(False) is None
        assert build_captioner(True, pretrained="/nonexistent/coca.pt") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(w.startswith("P-score off") for w in warnings)
    assert "/nonexistent/coca.pt" in warnings[1]


# ---- proposals ------------------------------------------------------------------------------
def test_superpixel_proposals_cover_synthetic_objects():
    best_ious = []
    for scene in make_scenes(6, seed=1, size=64):
        masks = SuperpixelProposer().propose(scene.image)
        assert masks.dtype == bool and masks.shape[1:] == scene.mask.shape and 1 <= len(masks) <= 96
        ious = {}
        for k in scene.labels:
            target = scene.mask == k + 1
            ious[int(target.sum())] = ((masks & target).sum((1, 2)) / (masks | target).sum((1, 2))).max()
        assert ious[max(ious)] > 0.7, ious  # the largest object of every scene is covered
        best_ious += list(ious.values())
    assert np.mean(best_ious) > 0.8, best_ious  # small, occluded objects may be missed, but few


def test_proposals_are_deterministic_and_take_extra_label_components():
    scene = make_scenes(1, seed=3, size=64)[0]
    proposer = build_proposer("superpixel", max_masks=10)
    a, b = proposer.propose(scene.image), proposer.propose(scene.image)
    np.testing.assert_array_equal(a, b)
    label_map = np.zeros((64, 64), np.uint8)
    label_map[2:20, 2:20] = 5
    label_map[40:60, 40:60] = 5
    label_map[30:33, 0:3] = 7  # too small at min area 20
    comps = label_map_components(label_map, min_area=20)
    assert comps.shape == (2, 64, 64) and comps[0].sum() == 18 * 18
    with_extra = proposer.propose(scene.image, extra_label_map=label_map)
    assert len(with_extra) == len(a) + 2
    np.testing.assert_array_equal(with_extra[:2], comps)


def test_sam_proposer_names_what_is_missing(tmp_path):
    with pytest.raises(RuntimeError, match="segment_anything|sam.pth"):
        SamProposer(tmp_path / "sam.pth")
    with pytest.raises(ValueError, match="superpixel"):
        build_proposer("watershed")


# ---- pipeline -------------------------------------------------------------------------------
def test_segment_expression_uses_rectifier_and_closed_vocabulary_noun():
    image, masks = two_colour_image()
    matcher = ColourMatcher()

    class Fixed:
        def propose(self, image):
            return masks

    vocab = ["red", "green", "blue"]
    mask, info = segment_expression(image, "the red square on the right", Fixed(), matcher, vocabulary=vocab)
    assert info["query"] == "red" and info["direction"] == "right" and info["index"] == 1
    np.testing.assert_array_equal(mask, masks[1])
    _, info = segment_expression(image, "the red square on the left", Fixed(), matcher, vocabulary=vocab)
    assert info["index"] == 0
    assert "red" not in info["negatives"]


def test_segment_expression_with_tiny_open_clip_on_real_image(voc_mini):
    from textwsss.guide.factory import build_matcher
    from textwsss.guide.tiny import register_tiny_configs
    register_tiny_configs()
    torch.manual_seed(0)
    matcher = build_matcher("open_clip", arch="tiny-vit", pretrained=None)
    image_id = read_split(voc_mini, "val")[0]
    image = read_image(image_path(voc_mini, image_id))
    proposer = SuperpixelProposer(max_masks=16)
    prepared = prepare_image(image, proposer, matcher)
    mask, info = segment_expression(image, "the aeroplane on the left", proposer, matcher,
                                    vocabulary=list(CLASS_NAMES), prepared=prepared)
    assert info["query"] == "the aeroplane on the left"  # open vocabulary: full expression
    assert info["target"] == "aeroplane" and info["direction"] == "left"
    assert mask.shape == image.shape[:2] and mask.any()
    np.testing.assert_array_equal(mask, prepared.masks[info["index"]])
    cx = np.nonzero(mask)[1].mean()
    assert cx < image.shape[1] / 2 or not any(m.any() and np.nonzero(m)[1].mean() < image.shape[1] / 2
                                              for m in prepared.masks)


def test_segment_expression_with_imagenet_stand_in_on_real_image(voc_mini):
    factory = pytest.importorskip("textwsss.guide.factory")
    matcher = factory.build_matcher("imagenet")
    image_id = read_split(voc_mini, "val")[0]
    image = read_image(image_path(voc_mini, image_id))
    plane = read_mask(mask_path(voc_mini, image_id)) == CLASS_NAMES.index("aeroplane") + 1
    assert plane.any(), image_id  # val[0] of voc-mini (2007_000033) shows aeroplanes
    proposer = SuperpixelProposer(max_masks=12)
    prepared = prepare_image(image, proposer, matcher)
    mask, info = segment_expression(image, "an aeroplane", proposer, matcher,
                                    vocabulary=list(CLASS_NAMES) + ["sea", "building"], prepared=prepared)
    assert info["query"] == "aeroplane" and info["direction"] is None
    assert "aeroplane" not in info["negatives"] and info["n_score"] == bool(info["negatives"])
    assert mask.shape == image.shape[:2]

    def iou(m):
        return (m & plane).sum() / max((m | plane).sum(), 1)

    # The superpixel proposals are small (about 3% of the image each) and only a few touch the aeroplanes: the
    # chosen one must be the proposal that overlaps them best, and lie mostly on them (the aeroplanes are 17% of
    # the image, so a mask placed anywhere would be ~17% aeroplane).
    assert iou(mask) == pytest.approx(max(iou(m) for m in prepared.masks)) and iou(mask) > 0.05
    assert (mask & plane).sum() / mask.sum() > 2.5 * plane.mean(), ((mask & plane).sum() / mask.sum(), plane.mean())
    with pytest.raises(ValueError, match="closed vocabulary"):
        segment_expression(image, "a unicorn", SuperpixelProposer(max_masks=4), matcher,
                           vocabulary=list(CLASS_NAMES))
