"""CLIMS CAM training end to end: through the real training loop (`train.fit` + `steps.clims_step`).

a. One real step with each real matcher (ImageNet stand-in, tiny open_clip): the matcher stays frozen and
   untouched while the CAM network trains from gradients that can only have come through the matcher.
b. A learning test on synthetic scenes with a matcher that truly recognises the synthetic classes by colour,
   and the BTM / REG ablations moving the maps in the directions CLIMS claims.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from textwsss.guide import build_matcher
from textwsss.guide.base import SIM_MAX, SIM_MIN, Matcher
from textwsss.models.factory import build_cam_net
from textwsss.training.steps import clims_step
from textwsss.synthetic import Scene, class_colour, make_scenes
from textwsss.training.loop import TrainConfig, fit
from vocmini import CLASS_NAMES, NUM_CLASSES, readable


def _tensors(scenes: list[Scene], num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Images (N,3,H,W) in [0,1], multi-hot labels (N,K), masks (N,H,W) with k+1 for class k."""
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 for s in scenes])
    labels = torch.zeros(len(scenes), num_classes)
    for n, s in enumerate(scenes):
        labels[n, list(s.labels)] = 1.0
    masks = torch.stack([torch.from_numpy(s.mask.astype(np.int64)) for s in scenes])
    return images, labels, masks


# ---- a. one real step with real matchers --------------------------------------------------------------------
def _one_clims_step(model: nn.Module, matcher: Matcher, words: list[str]) -> list[dict]:
    """One fit() step (4 images, batch 4) of CLIMS on 64 px synthetic scenes; returns the step's losses.

    delta = 0 and weight decay 0: every change of a CAM weight must come from gradients that went through
    the matcher (OTM, BTM, CBS), none from REG or decay."""
    images, labels, _ = _tensors(make_scenes(4, seed=5, size=64, num_classes=NUM_CLASSES, max_objects=2),
                                 NUM_CLASSES)
    step = clims_step(matcher, [readable(c) for c in CLASS_NAMES], words, alpha=10.0, beta=24.0, gamma=1.0,
                      delta=0.0, cbs_threshold=0.0, class_weights=None)
    recorded: list[dict] = []

    def recording_step(net, batch, device):
        out = step(net, batch, device)
        recorded.append({k: v.detach().clone() for k, v in out.items()})
        return out

    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.05, optimizer="sgd", weight_decay=0.0, amp=False, seed=0)
    fit(model, TensorDataset(images, labels), recording_step, model.param_groups(), cfg, desc="clims-test")
    return recorded


def _snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("kind", ["imagenet", "open_clip"])
def test_real_matcher_stays_frozen_while_cam_net_trains(kind):
    torch.manual_seed(0)
    if kind == "open_clip":
        from textwsss.guide.tiny import register_tiny_configs

        register_tiny_configs()
        matcher = build_matcher("open_clip", arch="tiny-vit", pretrained="none")
        words = ["tree", "river", "sea"]
    else:
        matcher = build_matcher("imagenet")
        words = matcher.check_concepts(["sea", "water", "rocks"], background=True)
    model = build_cam_net(pretrained="none", num_classes=NUM_CLASSES)
    matcher_before, model_before = _snapshot(matcher), _snapshot(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}  # the CLIMS stem

    recorded = _one_clims_step(model, matcher, words)

    assert len(recorded) == 1
    losses = recorded[0]
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["otm"] > 0 and losses["btm"] > 0 and losses["cbs"] > 0  # cbs_threshold 0: every word counts
    # The matcher: frozen, no gradient stored, every parameter and buffer bit-identical, still in eval mode.
    params = list(matcher.parameters())
    assert params and all(not p.requires_grad for p in params)
    assert all(p.grad is None for p in params)
    after = matcher.state_dict()
    assert matcher_before.keys() == after.keys()
    assert all(torch.equal(matcher_before[k], after[k]) for k in after), "a matcher tensor changed"
    assert not matcher.training
    # The CAM network: every trainable parameter got a gradient and the head moved; the frozen stem did not.
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert frozen and all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert all(p.grad is not None for _, p in trained)
    assert not torch.equal(model.classifier.weight, model_before["classifier.weight"])
    changed = [n for n, p in trained if not torch.equal(p.detach(), model_before[n])]
    assert len(changed) > 0.9 * len(trained), f"only {len(changed)} of {len(trained)} CAM tensors moved"
    assert all(torch.equal(p.detach(), model_before[n]) for n, p in model.named_parameters() if n in frozen)


# ---- b. learning test and ablations on synthetic scenes ------------------------------------------------------
NUM = 3  # synthetic classes 0..2 = VOC aeroplane, bicycle, bird (colours from synthetic.class_colour)
SIZE = 32
CONCEPTS = [readable(c) for c in CLASS_NAMES[:NUM]]


class ColourAmountMatcher(Matcher):
    """A fixed, differentiable matcher that truly recognises the synthetic classes by their colour.

    Each pixel x is projected on class k's chroma axis, scaled so that class k's colour projects to 1 and any
    grey (the textured background) or black pixel to 0; a soft ramp (softplus from `margin`) counts the pixels
    that show class k's colour at (near) full strength. amount_k = mean of that ramp over the image: about the
    fraction of the image covered by class k's colour. s_k = 1 - exp(-amount_k / area): a whole object (>= ~9 %
    of the image) scores > 0.999, a black or object-free image ~0 (clamped to SIM_MIN). A pixel dimmed by a map
    value P projects to P, so the score rewards showing the object at full strength. Like a clamped CLIP
    cosine, the score saturates: a part of a big object scores as high as all of it.
    """

    input_size = SIZE

    def __init__(self, num_classes: int = NUM, area: float = 0.01, margin: float = 0.3, softness: float = 0.03):
        super().__init__()
        colours = torch.tensor(np.stack([class_colour(k) for k in range(num_classes)]) / 255.0, dtype=torch.float32)
        chroma = colours - colours.mean(dim=1, keepdim=True)  # zero-sum: grey pixels project to 0
        self.register_buffer("axes", chroma / (chroma ** 2).sum(dim=1, keepdim=True))
        self.area, self.margin, self.softness = area, margin, softness
        self.names = [readable(c) for c in CLASS_NAMES[:num_classes]]
        self.freeze()

    def _encode_normalised(self, images: Tensor) -> Tensor:
        proj = torch.einsum("nchw,kc->nkhw", images, self.axes)
        ramp = self.softness * F.softplus((proj - self.margin) / self.softness) / (1.0 - self.margin)
        return ramp.mean(dim=(2, 3))

    def _encode_concept_batch(self, concepts: list[str]) -> Tensor:
        unknown = [c for c in concepts if c not in self.names]
        if unknown:
            raise ValueError(f"ColourAmountMatcher: unknown concepts {unknown}")
        return torch.eye(len(self.names))[[self.names.index(c) for c in concepts]]

    def logits(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        return image_feats @ concept_feats.T

    def similarity(self, image_feats: Tensor, concept_feats: Tensor) -> Tensor:
        return (1.0 - torch.exp(-self.logits(image_feats, concept_feats) / self.area)).clamp(SIM_MIN, SIM_MAX)


class TinyCamNet(nn.Module):
    """Two 3x3 conv layers and a bias-free 1x1 head to K maps (pre-sigmoid), full resolution."""

    def __init__(self, num_classes: int = NUM, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(width, num_classes, 1, bias=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.features(images))

    def param_groups(self) -> list[dict]:
        return [{"params": list(self.features.parameters()), "lr_mult": 1.0},
                {"params": list(self.classifier.parameters()), "lr_mult": 1.0}]


def _map_stats(maps: Tensor, masks: Tensor, labels: Tensor) -> dict[str, float]:
    """Over the present (image, class) pairs: IoU of P > 0.5 with the object, fraction of the object above
    0.5 (coverage), mean P on the object (object_mean), fraction of the rest above 0.5 (spill); and the mean
    map value over all K channels and pixels (mean_map)."""
    ious, cover, on_object, spill = [], [], [], []
    for b, k in torch.nonzero(labels > 0.5).tolist():
        pred, gt = maps[b, k] > 0.5, masks[b] == k + 1
        ious.append(float((pred & gt).sum()) / max(float((pred | gt).sum()), 1.0))
        cover.append(float(pred[gt].float().mean()))
        on_object.append(float(maps[b, k][gt].mean()))
        spill.append(float(pred[~gt].float().mean()))
    return {"iou": float(np.mean(ious)), "coverage": float(np.mean(cover)), "object_mean": float(np.mean(on_object)),
            "spill": float(np.mean(spill)), "mean_map": float(maps.mean())}


@pytest.fixture(scope="module")
def scene_sets() -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    return {"train": _tensors(make_scenes(16, seed=11, size=SIZE, num_classes=NUM), NUM),
            "test": _tensors(make_scenes(12, seed=12, size=SIZE, num_classes=NUM), NUM)}


def test_colour_matcher_recognises_the_synthetic_classes(scene_sets):
    """The learning test is only meaningful if the matcher scores what it should."""
    images, labels, masks = scene_sets["test"]
    matcher = ColourAmountMatcher()
    for b, k in torch.nonzero(labels > 0.5).tolist():
        obj = (masks[b] == k + 1).float()[None, None]
        s = matcher.score(torch.cat([images[b:b + 1] * obj, images[b:b + 1] * (1 - obj), torch.zeros(1, 3, SIZE, SIZE),
                                     images[b:b + 1] * obj * 0.1]), CONCEPTS)[:, k]
        assert s[0] > (0.99 if obj.mean() > 0.05 else 0.5), (b, k, s)  # the whole (visible) object
        assert s[1] < 0.01 and s[2] < 0.01, (b, k, s)  # background (and other objects) only; black
        assert s[3] < 0.1, (b, k, s)  # the object dimmed to 10 %: not shown at full strength
    absent = torch.nonzero(labels < 0.5).tolist()
    assert float(matcher.score(images, CONCEPTS)[[b for b, _ in absent], [k for _, k in absent]].max()) < 0.05


def _train(scene_sets, *, beta: float, delta: float, epochs: int = 30) -> dict[str, float]:
    """CLIMS training of TinyCamNet through fit() (Adam, poly decay); stats of the maps on held-out scenes."""
    torch.manual_seed(0)  # the same initial network for every ablation
    model = TinyCamNet()
    images, labels, _ = scene_sets["train"]
    step = clims_step(ColourAmountMatcher(), CONCEPTS, [], alpha=10.0, beta=beta, gamma=0.0, delta=delta,
                      cbs_threshold=0.26, class_weights=None)
    cfg = TrainConfig(epochs=epochs, batch_size=4, lr=0.02, optimizer="adam", weight_decay=0.0, amp=False, seed=0)
    fit(model, TensorDataset(images, labels), step, model.param_groups(), cfg, desc="clims-synthetic")
    test_images, test_labels, test_masks = scene_sets["test"]
    with torch.no_grad():
        return _map_stats(torch.sigmoid(model(test_images)), test_masks, test_labels)


# REG weight. Nothing but REG keeps maps off the background: this matcher, like CLIP, scores a map that is on
# everywhere as high as the object alone. And REG must hold against BTM, which for this matcher is steep
# (BTM ~ beta x leftover object fraction / area = 2400 per unit of image) while REG is a mean over B*K*h*w.
# Measured (alpha 10, beta 24): delta 2 or 20 leaves every map on everywhere; 100-200 gives object maps.
DELTA = 200.0


def test_clims_training_learns_object_maps_and_ablations_move_coverage(scene_sets):
    """Measured with these seeds: full IoU 0.87 / coverage 0.98; no REG: all maps 1.0 everywhere (IoU 0.21);
    no BTM: coverage 0.38, mean P on the object 0.26. Other scene seeds (21, 31, 41) gave full IoU 0.75-0.79,
    coverage >= 0.95, and without BTM coverage 0.27-0.51."""
    torch.manual_seed(0)
    test_images, test_labels, test_masks = scene_sets["test"]
    with torch.no_grad():
        before = _map_stats(torch.sigmoid(TinyCamNet()(test_images)), test_masks, test_labels)
    all_on = _map_stats(torch.ones(len(test_images), NUM, SIZE, SIZE), test_masks, test_labels)
    full = _train(scene_sets, beta=24.0, delta=DELTA)
    no_reg = _train(scene_sets, beta=24.0, delta=0.0)
    no_btm = _train(scene_sets, beta=0.0, delta=DELTA)
    report = {"before": before, "all_on": all_on, "full": full, "no_reg": no_reg, "no_btm": no_btm}
    # CLIMS puts the maps on the objects: far above the untrained net and above switching every map on.
    assert full["iou"] > 0.7 and full["iou"] > before["iou"] + 0.3 and full["iou"] > all_on["iou"] + 0.4, report
    assert full["coverage"] > 0.9 and full["spill"] < 0.1, report
    # Without REG nothing pushes maps down off the objects: they grow over the background and absent classes.
    assert no_reg["mean_map"] > full["mean_map"] + 0.5, report
    assert no_reg["spill"] > full["spill"] + 0.5, report
    assert no_reg["iou"] < full["iou"] - 0.3, report
    # Without BTM, OTM is content with a dim or partial object (its score saturates) and REG shrinks the maps:
    # much less of the object is covered, and the IoU falls with it.
    assert no_btm["coverage"] < full["coverage"] - 0.3, report
    assert no_btm["object_mean"] < full["object_mean"] - 0.3, report
    assert no_btm["mean_map"] < full["mean_map"] and no_btm["iou"] < full["iou"] - 0.2, report
