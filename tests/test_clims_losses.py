"""CLIMS terms against hand-computed values, one matcher call per step, and a learning test."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from textwsss.guide.base import Matcher
from textwsss.losses.clims import bce_loss, clims_loss
from textwsss.synthetic import class_colour, make_scenes


class IntensityMatcher(Matcher):
    """s(image, concept) = mean pixel intensity x a per-concept factor: similarities we control."""

    input_size = 8

    def __init__(self, factors: dict[str, float]) -> None:
        super().__init__()
        self.factors = factors
        self.image_calls = 0

    def encode_images(self, images: Tensor) -> Tensor:
        self.image_calls += 1
        return super().encode_images(images)

    def _encode_normalised(self, images: Tensor) -> Tensor:
        return images.mean(dim=(1, 2, 3)).unsqueeze(1)

    def _encode_concept_batch(self, concepts: list[str]) -> Tensor:
        return torch.tensor([[self.factors[c]] for c in concepts], dtype=torch.float64)

    def similarity(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        return (image_feats.double() @ concept_feats.T).clamp(1e-4, 0.9999)

    def logits(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        return image_feats.double() @ concept_feats.T


FACTORS = {"cat": 1.0, "dog": 0.5, "cow": 1.0, "tree": 2.0, "sea": 0.5}
CLASSES = ["cat", "dog", "cow"]


def _case() -> tuple[Tensor, Tensor, Tensor]:
    """Two constant images (0.8, 0.5) and constant maps, so every score is exact by hand."""
    images = torch.stack([torch.full((3, 12, 12), 0.8), torch.full((3, 12, 12), 0.5)]).double()
    levels = torch.tensor([[0.5, 0.25, 0.9], [0.2, 0.6, 0.1]], dtype=torch.float64)
    maps = levels[:, :, None, None].expand(2, 3, 5, 5).clone().requires_grad_(True)
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    return maps, images, labels


# pairs (image 0, cat), (image 0, dog), (image 1, dog):
#   fg intensity 0.4, 0.2, 0.3 ; bg intensity 0.4, 0.6, 0.2
#   s(fg, class) = 0.4, 0.1, 0.15 ; s(bg, class) = 0.4, 0.3, 0.1
#   s(fg, tree) = 0.8, 0.4, 0.6 ; s(fg, sea) = 0.2, 0.1, 0.15
# 'per_image' reduction: each term summed over an image's classes, averaged over the 2 images
OTM = -(math.log(0.4) + math.log(0.1) + math.log(0.15)) / 2
BTM = -(math.log(0.6) + math.log(0.7) + math.log(0.9)) / 2
CBS_TREE = -(math.log(0.2) + math.log(0.6) + math.log(0.4)) / 2
CBS_SEA = -(math.log(0.8) + math.log(0.9) + math.log(0.85)) / 2
REG = (0.5 + 0.25 + 0.9 + 0.2 + 0.6 + 0.1) / 6


def test_official_reduction_matches_hand_computation():
    # the public clip_loss.py: OTM, BTM the mean over the 3 present (image, class) pairs (image 0 has two
    # classes, image 1 one); CBS the plain sum over pairs x words above the threshold
    maps, images, labels = _case()
    out = clims_loss(maps, images, labels, IntensityMatcher(FACTORS), CLASSES, ["tree", "sea"],
                     cbs_threshold=0.26, reduction="official")
    otm = -(math.log(0.4) + math.log(0.1) + math.log(0.15)) / 3
    btm = -(math.log(0.6) + math.log(0.7) + math.log(0.9)) / 3
    cbs = -(math.log(1 - 0.8) + math.log(1 - 0.4) + math.log(1 - 0.6))  # tree only: sea scores <= 0.2
    assert out["otm"].item() == pytest.approx(otm, rel=1e-6)
    assert out["btm"].item() == pytest.approx(btm, rel=1e-6)
    assert out["cbs"].item() == pytest.approx(cbs, rel=1e-6)
    assert out["reg"].item() == pytest.approx(REG, rel=1e-6)
    assert out["total"].item() == pytest.approx(10 * otm + 24 * btm + cbs + 0.2 * REG, rel=1e-6)
    # the default is the official form
    default = clims_loss(maps, images, labels, IntensityMatcher(FACTORS), CLASSES, ["tree", "sea"])
    assert default["total"].item() == pytest.approx(out["total"].item(), rel=1e-9)
    with pytest.raises(ValueError, match="reduction"):
        clims_loss(maps, images, labels, IntensityMatcher(FACTORS), CLASSES, [], reduction="sum")


def test_official_input_masks_the_imagenet_normalised_image():
    maps, images, labels = _case()
    matcher = IntensityMatcher({"cat": 0.3, "dog": 0.3, "cow": 0.3})
    out = clims_loss(maps, images, labels, matcher, CLASSES, [], input_mode="official", reduction="official")
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])

    def s(value, p):  # intensity of the normalised constant image times the map level, times the factor
        return min(max(float(((value - mean) / std).mean()) * p * 0.3, 1e-4), 0.9999)

    fg = [s(0.8, 0.5), s(0.8, 0.25), s(0.5, 0.6)]
    assert out["otm"].item() == pytest.approx(-sum(math.log(v) for v in fg) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="input_mode"):
        clims_loss(maps, images, labels, matcher, CLASSES, [], input_mode="raw")


def test_prenormalised_input_skips_the_matchers_own_normalisation():
    matcher = IntensityMatcher(FACTORS)
    matcher.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5, dtype=torch.float64))
    matcher.register_buffer("std", torch.full((1, 3, 1, 1), 0.25, dtype=torch.float64))
    x = torch.full((1, 3, 8, 8), 0.75, dtype=torch.float64)
    assert matcher.encode_images(x).item() == pytest.approx(1.0)  # (0.75 - 0.5) / 0.25
    assert matcher.encode_prenormalised(x).item() == pytest.approx(0.75)


def test_terms_match_hand_computation():
    maps, images, labels = _case()
    matcher = IntensityMatcher(FACTORS)
    out = clims_loss(maps, images, labels, matcher, CLASSES, ["tree", "sea"], alpha=10, beta=24, gamma=1,
                     delta=0.2, cbs_threshold=0.26, reduction="per_image")
    assert out["otm"].item() == pytest.approx(OTM, rel=1e-6)
    assert out["btm"].item() == pytest.approx(BTM, rel=1e-6)
    assert out["cbs"].item() == pytest.approx(CBS_TREE, rel=1e-6)  # every sea score is below 0.26
    assert out["reg"].item() == pytest.approx(REG, rel=1e-6)
    assert out["total"].item() == pytest.approx(10 * OTM + 24 * BTM + CBS_TREE + 0.2 * REG, rel=1e-6)
    out["total"].backward()
    assert maps.grad[0, 2].abs().sum() > 0  # absent class: only REG touches it
    assert matcher.image_calls == 1  # every fg and bg of the batch in one matcher call


@pytest.mark.parametrize("reduction", ["official", "per_image"])
def test_batch_without_present_classes_keeps_reg(reduction):
    # no (image, class) pair to score: the matcher is never called, but REG still pushes every map down
    maps, images, _ = _case()
    matcher = IntensityMatcher(FACTORS)
    out = clims_loss(maps, images, torch.zeros(2, 3), matcher, CLASSES, ["tree", "sea"], delta=0.2,
                     reduction=reduction)
    assert out["reg"].item() == pytest.approx(REG, rel=1e-6)
    assert out["total"].item() == pytest.approx(0.2 * REG, rel=1e-6)
    assert out["otm"].item() == out["btm"].item() == out["cbs"].item() == 0.0
    assert matcher.image_calls == 0
    out["total"].backward()
    # d(0.2 * mean)/dP = 0.2 / (2 images x 3 classes x 5 x 5) on every map pixel
    torch.testing.assert_close(maps.grad, torch.full_like(maps, 0.2 / 150))


@pytest.mark.parametrize("per_call, calls", [(1, 6), (4, 2), (6, 1), (100, 1)])
def test_matcher_calls_of_a_few_images_give_the_same_terms(per_call, calls):
    # 3 pairs -> 6 masked images; CPUs run calls of ~4 images fastest, the terms must not change.
    maps, images, labels = _case()
    matcher = IntensityMatcher(FACTORS)
    out = clims_loss(maps, images, labels, matcher, CLASSES, ["tree", "sea"], max_images_per_call=per_call,
                     reduction="per_image")
    assert matcher.image_calls == calls
    for name, value in {"otm": OTM, "btm": BTM, "cbs": CBS_TREE, "reg": REG}.items():
        assert out[name].item() == pytest.approx(value, rel=1e-6)
    out["total"].backward()
    one_call_maps = maps.detach().clone().requires_grad_(True)
    clims_loss(one_call_maps, images, labels, IntensityMatcher(FACTORS), CLASSES, ["tree", "sea"],
               reduction="per_image")["total"].backward()
    torch.testing.assert_close(maps.grad, one_call_maps.grad)
    with pytest.raises(ValueError, match="max_images_per_call"):
        clims_loss(maps, images, labels, matcher, CLASSES, [], max_images_per_call=-1)


def test_cbs_threshold_and_per_class_words():
    maps, images, labels = _case()
    matcher = IntensityMatcher(FACTORS)
    every = clims_loss(maps, images, labels, matcher, CLASSES, ["tree", "sea"], cbs_threshold=0.0,
                       reduction="per_image")
    assert every["cbs"].item() == pytest.approx(CBS_TREE + CBS_SEA, rel=1e-6)
    high = clims_loss(maps, images, labels, matcher, CLASSES, ["tree", "sea"], cbs_threshold=0.5,
                      reduction="per_image")
    assert high["cbs"].item() == pytest.approx(-(math.log(0.2) + math.log(0.4)) / 2, rel=1e-6)
    per_class = clims_loss(maps, images, labels, matcher, CLASSES, {"cat": ["sea"], "cow": ["tree"]},
                           cbs_threshold=0.0, reduction="per_image")
    assert per_class["cbs"].item() == pytest.approx(-math.log(0.8) / 2, rel=1e-6)  # dog has no words
    none = clims_loss(maps, images, labels, matcher, CLASSES, [], cbs_threshold=0.0)
    assert none["cbs"].item() == 0.0
    assert matcher.image_calls == 4


def test_class_weights_scale_otm_and_btm():
    maps, images, labels = _case()
    out = clims_loss(maps, images, labels, IntensityMatcher(FACTORS), CLASSES, [],
                     class_weights=torch.tensor([3.0, 1.0, 1.0]), reduction="per_image")
    assert out["otm"].item() == pytest.approx(OTM - 2 * math.log(0.4) / 2 * 1, rel=1e-6)
    assert out["btm"].item() == pytest.approx(BTM - 2 * math.log(0.6) / 2, rel=1e-6)


def test_bad_inputs_are_named():
    maps, images, labels = _case()
    with pytest.raises(ValueError, match="class_concepts"):
        clims_loss(maps, images, labels, IntensityMatcher(FACTORS), ["cat"], [])
    with pytest.raises(ValueError, match="labels"):
        clims_loss(maps, images, labels[:, :2], IntensityMatcher(FACTORS), CLASSES, [])


def test_bce_loss_matches_hand_computation():
    logits_map = torch.tensor([[[[1.0, 3.0]], [[-2.0, 0.0]]]])  # B=1, K=2, 1x2 maps
    labels = torch.tensor([[1.0, 0.0]])
    pooled = [2.0, -1.0]
    expected = (-math.log(1 / (1 + math.exp(-pooled[0]))) - math.log(1 - 1 / (1 + math.exp(-pooled[1])))) / 2
    out = bce_loss(logits_map, labels)
    assert out["bce"].item() == pytest.approx(expected, rel=1e-6)
    assert out["total"] is out["bce"]


# ---- learning test ------------------------------------------------------------------------------
NUM = 3


class ColourMatcher(Matcher):
    """A differentiable stand-in for CLIP on synthetic scenes: the feature for class k is the mean
    over pixels of the (rectified) projection of the pixel's chroma on class k's chroma, about the
    fraction of the image showing class k's colour at full strength; s = 1 - exp(-6 x feature)."""

    input_size = 32

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("colours", torch.tensor(np.stack([class_colour(k) for k in range(NUM)]) / 255.0,
                                                     dtype=torch.float32))

    def _encode_normalised(self, images: Tensor) -> Tensor:
        chroma = self.colours - self.colours.mean(dim=1, keepdim=True)  # grey pixels project to 0
        proj = torch.einsum("nchw,kc->nkhw", images, chroma) / (chroma ** 2).sum(dim=1)[None, :, None, None]
        # the 0.3 margin ignores the grey texture's noise and partial matches of other colours
        return (F.relu(proj - 0.3) / 0.7).mean(dim=(2, 3))

    def _encode_concept_batch(self, concepts: list[str]) -> Tensor:
        return torch.eye(NUM)[[int(c) for c in concepts]]

    def logits(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        return image_feats @ concept_feats.T

    def similarity(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        return (1 - torch.exp(-6 * self.logits(image_feats, concept_feats))).clamp(1e-4, 0.9999)


def _present_iou(maps: Tensor, masks: Tensor, labels: Tensor) -> float:
    ious = []
    for b, k in torch.nonzero(labels > 0.5).tolist():
        pred, gt = maps[b, k] > 0.5, masks[b] == k + 1
        ious.append(float((pred & gt).sum()) / max(float((pred | gt).sum()), 1.0))
    return float(np.mean(ious))


def test_clims_loss_trains_maps_onto_objects():
    torch.manual_seed(0)
    scenes = make_scenes(12, seed=3, size=32, num_classes=NUM, max_objects=2)
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 for s in scenes])
    masks = torch.stack([torch.from_numpy(s.mask.astype(np.int64)) for s in scenes])
    labels = torch.zeros(len(scenes), NUM)
    for n, s in enumerate(scenes):
        labels[n, list(s.labels)] = 1
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, NUM, 1, bias=False))
    matcher = ColourMatcher()
    optimiser = torch.optim.Adam(net.parameters(), lr=0.05)
    with torch.no_grad():
        before = _present_iou(torch.sigmoid(net(images)), masks, labels)
    losses = []
    for _ in range(80):
        # REG is the only term against over-large maps; this matcher scores a fully-on map as high as
        # the object alone, so REG gets a larger weight than the VOC default.
        out = clims_loss(torch.sigmoid(net(images)), images, labels, matcher, ["0", "1", "2"], [], delta=5.0)
        optimiser.zero_grad()
        out["total"].backward()
        optimiser.step()
        losses.append(out["total"].item())
    with torch.no_grad():
        after = _present_iou(torch.sigmoid(net(images)), masks, labels)
    assert losses[-1] < 0.7 * losses[0]
    all_on = _present_iou(torch.ones(len(scenes), NUM, 32, 32), masks, labels)  # ~0.2: maps on everywhere
    assert after > before + 0.3 and after > all_on + 0.15, (before, after, all_on)


# ---- edge cases: each pins one rule of the loss (found by the mutation check, scripts/mutation.py) ----------
def test_background_words_must_be_a_list_or_a_mapping_of_class_concepts():
    maps, images, labels = _case()
    with pytest.raises(ValueError, match=r"^background_concepts: keys \['horse'\] are not class concepts "
                                         r"\['cat', 'dog', 'cow'\]$"):
        clims_loss(maps, images, labels, IntensityMatcher(FACTORS), CLASSES, {"cat": ["sea"], "horse": ["tree"]})
    with pytest.raises(ValueError, match=r"^background_concepts: expected a list of words or a mapping, got a "
                                         r"single string$"):
        clims_loss(maps, images, labels, IntensityMatcher(FACTORS), CLASSES, "tree")


def test_shapes_are_checked_with_the_shape_given():
    maps, images, labels = _case()
    m = IntensityMatcher(FACTORS)
    with pytest.raises(ValueError, match=r"^maps: expected \(B,K,h,w\), got shape \(2, 3, 5\)$"):
        clims_loss(maps[..., 0], images, labels, m, CLASSES, [])
    # a wrong channel count alone, a wrong batch alone, a missing dimension: each is refused
    with pytest.raises(ValueError, match=r"^images: expected \(2,3,H,W\), got \(2, 1, 12, 12\)$"):
        clims_loss(maps, images[:, :1], labels, m, CLASSES, [])
    with pytest.raises(ValueError, match=r"^images: expected \(2,3,H,W\), got \(3, 3, 12, 12\)$"):
        clims_loss(maps, torch.cat([images, images[:1]]), labels, m, CLASSES, [])
    with pytest.raises(ValueError, match=r"^images: expected \(2,3,H,W\), got \(2, 3, 12\)$"):
        clims_loss(maps, images[..., 0], labels, m, CLASSES, [])
    with pytest.raises(ValueError, match=r"^class_weights: expected shape \(3,\), got \(2,\)$"):
        clims_loss(maps, images, labels, m, CLASSES, [], class_weights=torch.ones(2))


def test_cbs_counts_a_word_only_above_the_threshold():
    # one 8x8 image at 0.5, the cat map at 0.5 (no resizing, so every score is exact): s(fg, tree) = 0.25 x 2 = 0.5
    images = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    maps = torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64)
    labels = torch.ones(1, 1)
    at = clims_loss(maps, images, labels, IntensityMatcher(FACTORS), ["cat"], ["tree"], cbs_threshold=0.5)
    below = clims_loss(maps, images, labels, IntensityMatcher(FACTORS), ["cat"], ["tree"], cbs_threshold=0.4999)
    assert at["cbs"].item() == 0.0  # a score equal to the threshold does not exceed it
    assert below["cbs"].item() == pytest.approx(-math.log(1 - 0.5), rel=1e-9)


class UnclampedMatcher(IntensityMatcher):
    """Similarities outside (0, 1): the loss must clamp them into [SIM_MIN, SIM_MAX] itself."""

    def similarity(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        return image_feats.double() @ concept_feats.T


def test_similarities_are_clamped_so_every_term_stays_finite():
    # image at 0.5, factor 4: the cat map fully on (fg 0.5 -> s = 2, bg 0 -> s = 0), the dog map off (fg 0 -> 0,
    # bg 0.5 -> 2); clamped into [1e-4, 0.9999] (guide/base.py SIM_MIN, SIM_MAX) every log stays finite
    images = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    maps = torch.stack([torch.ones(8, 8), torch.zeros(8, 8)])[None].double()
    out = clims_loss(maps, images, torch.ones(1, 2), UnclampedMatcher({"cat": 4.0, "dog": 4.0}), ["cat", "dog"], [],
                     reduction="official")
    assert out["otm"].item() == pytest.approx(-(math.log(0.9999) + math.log(1e-4)) / 2, rel=1e-9)
    assert out["btm"].item() == pytest.approx(-(math.log(1 - 1e-4) + math.log(1 - 0.9999)) / 2, rel=1e-9)


def test_maps_and_images_are_resized_without_aligned_corners():
    # 2x2 image and map, both 0 in the left column and 1 in the right, resized to the matcher's 8x8 as
    # F.interpolate(align_corners=False) does: column i samples x = (i + 0.5) / 4 - 0.5, clamped into [0, 1], so the
    # 8 columns are t = 0, 0, 1/8, 3/8, 5/8, 7/8, 1, 1. fg = t * t has mean 212/512, bg = t * (1 - t) 1/2 - 212/512
    # (aligned corners would give t = i/7 and mean t^2 = 140/392 instead)
    ramp = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    images = ramp.expand(1, 3, 2, 2).clone()
    maps = ramp[None, None].clone()
    out = clims_loss(maps, images, torch.ones(1, 1), IntensityMatcher(FACTORS), ["cat"], [], reduction="official")
    fg, bg = 212 / 512, 0.5 - 212 / 512
    assert out["otm"].item() == pytest.approx(-math.log(fg), rel=1e-6)
    assert out["btm"].item() == pytest.approx(-math.log(1 - bg), rel=1e-6)
    assert out["reg"].item() == pytest.approx(0.5)


class Float32Matcher(IntensityMatcher):
    """Similarities in the dtype of the image features (float32: the matcher's resize casts to it)."""

    def similarity(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        return (image_feats @ concept_feats.T.to(image_feats.dtype)).clamp(1e-4, 0.9999)


def test_terms_keep_the_dtype_of_the_similarities():
    # float64 images and class weights beside float32 maps and a float32 matcher: the terms stay float32 (a
    # float64 weight would turn the whole loss, and its backward pass, into float64)
    maps, images, labels = _case()
    out = clims_loss(maps.detach().float(), images, labels, Float32Matcher(FACTORS), CLASSES, [],
                     class_weights=torch.tensor([3.0, 1.0, 1.0], dtype=torch.float64), reduction="per_image")
    assert {k: v.dtype for k, v in out.items()} == dict.fromkeys(out, torch.float32)
    assert out["otm"].item() == pytest.approx(OTM - 2 * math.log(0.4) / 2, rel=1e-5)


def test_constants_are_made_on_the_device_of_the_inputs():
    # On a GPU, a constant made on the default device (the CPU) beside CUDA inputs stops the step. Here the default
    # device is 'meta' (tensors without data) while the inputs live on the CPU: the same mistake, without a GPU.
    maps, images, labels = _case()
    matcher = IntensityMatcher(FACTORS)
    kwargs = dict(reduction="per_image", input_mode="official")
    expected = clims_loss(maps, images, labels, matcher, CLASSES, [], **kwargs)  # also caches the concepts
    with torch.device("meta"):
        out = clims_loss(maps, images, labels, matcher, CLASSES, [], **kwargs)
    for name, value in expected.items():
        assert out[name].device.type == "cpu" and out[name].item() == pytest.approx(value.item(), rel=1e-12), name


def test_official_input_skips_the_matchers_own_normalisation():
    # 'official' feeds the ImageNet-normalised masked image as it is: a matcher's own mean/std are not applied again
    maps, images, labels = _case()
    plain = IntensityMatcher({"cat": 0.3, "dog": 0.3, "cow": 0.3})
    normalising = IntensityMatcher({"cat": 0.3, "dog": 0.3, "cow": 0.3})
    normalising.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
    normalising.register_buffer("std", torch.full((1, 3, 1, 1), 0.25))
    a = clims_loss(maps, images, labels, plain, CLASSES, [], input_mode="official")
    b = clims_loss(maps, images, labels, normalising, CLASSES, [], input_mode="official")
    assert b["otm"].item() == pytest.approx(a["otm"].item(), rel=1e-9)
    assert b["btm"].item() == pytest.approx(a["btm"].item(), rel=1e-9)
    # while 'clip' does apply them: the same matchers then disagree
    assert clims_loss(maps, images, labels, normalising, CLASSES, [])["otm"].item() != pytest.approx(
        clims_loss(maps, images, labels, plain, CLASSES, [])["otm"].item(), rel=1e-3)


def test_bce_loss_checks_the_labels_and_takes_integer_labels():
    logits_map = torch.tensor([[[[1.0, 3.0]], [[-2.0, 0.0]]]])  # pooled 2, -1
    expected = (-math.log(1 / (1 + math.exp(-2.0))) - math.log(1 - 1 / (1 + math.exp(1.0)))) / 2
    # labels as the datasets give them (integers) are cast to the logits' dtype
    assert bce_loss(logits_map, torch.tensor([[1, 0]]))["bce"].item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"^logits_map \(B,K,h,w\) and labels \(B,K\) disagree: \(1, 2, 1, 2\) vs "
                                         r"\(1, 3\)$"):
        bce_loss(logits_map, torch.tensor([[1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="disagree"):
        bce_loss(logits_map[0], torch.tensor([[1.0, 0.0]]))


class PixelMatcher(IntensityMatcher):
    """s(image, concept) = the image's value at (channel 0, row 0, column 1) x the concept's factor: a score that
    sees where the resizing puts the map's samples."""

    def _encode_normalised(self, images: Tensor) -> Tensor:
        return images[:, 0, 0, 1].unsqueeze(1)


RAMP = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)


def _ramp_case() -> tuple[Tensor, Tensor, Tensor]:
    """The cat's map a horizontal ramp 0.1 .. 0.9 over 5 columns (2 rows), the image one 0.2 .. 1.0, both resized
    to the matcher's 8 x 8. Column 1 samples source column 1 * 4/7 with align_corners=True (the official
    train_clims.py): map 0.1 + 0.2 * 4/7 = 3/14, image 0.2 + 0.2 * 4/7 = 11/35; with False (1 + 0.5) * 5/8 - 0.5
    = 0.4375: map 0.1875, image 0.2875."""
    maps = torch.zeros(1, 3, 2, 5, dtype=torch.float64)
    maps[0, 0] = RAMP
    images = (RAMP + 0.1).expand(1, 3, 2, 5).clone()
    return maps, images, torch.tensor([[1.0, 0.0, 0.0]])


# (align_corners, s(fg) = image x map, s(bg) = image x (1 - map)) at the matcher's pixel
ALIGNED = (True, 11 / 35 * 3 / 14, 11 / 35 * 11 / 14)
UNALIGNED = (False, 0.2875 * 0.1875, 0.2875 * 0.8125)


@pytest.mark.parametrize("align_corners, fg, bg", [ALIGNED, UNALIGNED])
def test_align_corners_reaches_the_resizing_to_the_matcher(align_corners, fg, bg):
    maps, images, labels = _ramp_case()
    out = clims_loss(maps, images, labels, PixelMatcher(FACTORS), CLASSES, [], align_corners=align_corners)
    assert out["otm"].item() == pytest.approx(-math.log(fg), rel=1e-6)
    assert out["btm"].item() == pytest.approx(-math.log(1 - bg), rel=1e-6)
    if not align_corners:  # the default is F.interpolate's
        default = clims_loss(maps, images, labels, PixelMatcher(FACTORS), CLASSES, [])
        assert default["otm"].item() == pytest.approx(out["otm"].item(), rel=1e-12)


@pytest.mark.parametrize("align_corners, fg, bg", [ALIGNED, UNALIGNED])
def test_clims_step_passes_align_corners_on(align_corners, fg, bg):
    from textwsss.training.steps import clims_step

    class RampNet(torch.nn.Module):
        def forward(self, x):  # logits whose sigmoid is the ramp case's maps
            maps = _ramp_case()[0].expand(x.shape[0], -1, -1, -1)
            return torch.logit(maps.clamp(1e-12, 1 - 1e-12))

    maps, images, labels = _ramp_case()
    step = clims_step(PixelMatcher(FACTORS), CLASSES, [], alpha=1.0, beta=1.0, gamma=1.0, delta=0.0,
                      cbs_threshold=0.26, class_weights=None, align_corners=align_corners)
    out = step(RampNet(), (images, labels), "cpu")
    assert out["otm"].item() == pytest.approx(-math.log(fg), rel=1e-6)
    assert out["btm"].item() == pytest.approx(-math.log(1 - bg), rel=1e-6)


@pytest.mark.parametrize("value", [True, False])
def test_train_cam_hands_clims_align_corners_to_the_step(value, tmp_path, monkeypatch):
    """params clims.align_corners -> train_cam's CLIMS step (the stage is stopped when it asks for the step)."""
    from textwsss.params import parse_params
    from textwsss.pipeline import prepare, train_cam
    from textwsss.pipeline.workspace import Workspace
    from textwsss.synthetic import write_voc_root

    write_voc_root(tmp_path / "voc", train=2, val=1, seed=0, size=32, num_classes=3)
    params = parse_params({"data": {"root": str(tmp_path / "voc"), "workers": 0},
                           "cam": {"pretrained": "none", "init": "imagenet"},
                           "clims": {"align_corners": value}})
    ws = Workspace(tmp_path / "project")
    prepare.run(params, ws)
    seen = {}

    class Stop(Exception):
        pass

    def recording_step(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(train_cam, "build_guide", lambda params, data, ids, device: (None, ["a", "b", "c"], []))
    monkeypatch.setattr(train_cam, "clims_step", recording_step)
    with pytest.raises(Stop):
        train_cam.run(params, ws)
    assert seen["align_corners"] is value
