"""Matchers: open_clip (tiny random models, real code path), the imagenet stand-in, the factory."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torchvision.models import ResNet50_Weights

from textwsss.guide import build_matcher
from textwsss.guide.imagenet_matcher import ImageNetMatcher, concept_indices, load_concept_table
from textwsss.guide.open_clip_matcher import OpenClipMatcher
from textwsss.guide.tiny import register_tiny_configs
from vocmini import CLASS_NAMES, image_path, labels_of_mask, mask_path, read_image, read_mask, read_split, readable

register_tiny_configs()


@pytest.fixture(scope="module")
def tiny_vit() -> OpenClipMatcher:
    torch.manual_seed(0)
    return OpenClipMatcher("tiny-vit", pretrained="none")


@pytest.fixture(scope="module")
def imagenet() -> ImageNetMatcher:
    return ImageNetMatcher()


def _load(root, image_id: str, size: int = 224) -> torch.Tensor:
    image = torch.from_numpy(read_image(image_path(root, image_id))).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)


# ---- open_clip ---------------------------------------------------------------------------------
def test_open_clip_is_frozen_but_passes_gradients_to_images(tiny_vit):
    tiny_vit.train()  # a parent calling .train() must not unfreeze it
    assert not tiny_vit.training and not tiny_vit.model.training
    assert all(not p.requires_grad for p in tiny_vit.parameters())
    images = torch.rand(2, 3, 40, 50, requires_grad=True)
    tiny_vit.encode_images(images).pow(2).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_open_clip_uses_clip_normalisation_and_resizes(tiny_vit):
    images = torch.rand(2, 3, 40, 50)
    resized = F.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = tiny_vit.model.encode_image((resized - mean) / std)
        got = tiny_vit.encode_images(images)
    assert got.shape == (2, 32)
    torch.testing.assert_close(got, expected)


def test_open_clip_similarity_is_clamped_cosine(tiny_vit):
    image_feats = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    concept_feats = torch.tensor([[2.0, 0.0], [-1.0, 0.0]])
    sim = tiny_vit.similarity(image_feats, concept_feats)
    expected = torch.tensor([[0.9999, 1e-4], [1 / math.sqrt(2), 1e-4], [0.6, 1e-4]])
    torch.testing.assert_close(sim, expected)
    torch.testing.assert_close(tiny_vit.logits(image_feats, concept_feats)[2], torch.tensor([60.0, -60.0]))


def test_concepts_are_encoded_once_and_prompted(tiny_vit, monkeypatch):
    seen: list[list[str]] = []
    original = tiny_vit._encode_concept_batch
    monkeypatch.setattr(tiny_vit, "_encode_concept_batch", lambda cs: seen.append(list(cs)) or original(cs))
    first = tiny_vit.encode_concepts(["zebra crossing", "yak"])
    second = tiny_vit.encode_concepts(["yak", "zebra crossing", "yak"])
    assert seen == [["zebra crossing", "yak"]]
    torch.testing.assert_close(second[0], first[1])
    tokens = tiny_vit.tokenizer(["a photo of yak."])
    with torch.no_grad():
        torch.testing.assert_close(first[1], tiny_vit.model.encode_text(tokens)[0])


def test_open_clip_gradcam_features_do_not_change_the_output(tiny_vit):
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    fmap, feats = tiny_vit.gradcam_features(images)
    assert fmap.shape == (1, 64, 4, 4)
    torch.testing.assert_close(feats, tiny_vit.encode_images(images))
    (grad,) = torch.autograd.grad(feats.sum(), fmap)
    assert grad.abs().sum() > 0


def test_open_clip_resnet_gradcam_map():
    matcher = OpenClipMatcher("tiny-rn", pretrained=None)
    fmap, feats = matcher.gradcam_features(torch.rand(1, 3, 64, 64, requires_grad=True))
    assert fmap.shape == (1, 512, 2, 2) and feats.shape == (1, 32)


def test_open_clip_loads_a_local_checkpoint(tiny_vit, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_vit.model.state_dict(), path)
    torch.manual_seed(123)  # a different random init, overwritten by the checkpoint
    loaded = OpenClipMatcher("tiny-vit", pretrained=str(path))
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_images(images), tiny_vit.encode_images(images))


def test_open_clip_missing_weights_name_the_file(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(RuntimeError) as err:
        OpenClipMatcher("ViT-B-32", pretrained="openai")
    message = str(err.value)
    assert "ViT-B-32" in message and "'openai'" in message and "guide.pretrained" in message
    assert str(tmp_path / ".cache" / "clip" / "ViT-B-32.pt") in message
    assert "models--timm--vit_base_patch32_clip_224.openai" in message
    with pytest.raises(RuntimeError, match="not-a-tag"):
        OpenClipMatcher("ViT-B-32", pretrained="not-a-tag")


# ---- imagenet stand-in -------------------------------------------------------------------------
def test_concept_table_indices_match_imagenet_names():
    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    table = load_concept_table()
    for section in ("classes", "background"):
        for name, entry in table[section].items():
            assert [categories[i] for i in entry["imagenet_indices"]] == entry["imagenet_names"], name
    assert set(table["classes"]) >= set(CLASS_NAMES)
    for name in CLASS_NAMES:
        assert concept_indices(readable(name)) == concept_indices(name)


def test_check_concepts_refuses_classes_and_drops_background(imagenet, caplog):
    with pytest.raises(ValueError, match="unicorn"):
        imagenet.check_concepts(["cat", "unicorn"], background=False)
    assert imagenet.check_concepts(["cat", "dining table"], background=False) == ["cat", "dining table"]
    with caplog.at_level(logging.WARNING):
        kept = imagenet.check_concepts(["tree", "sea", "sky", "mountain", "railway"], background=True)
    assert kept == ["sea", "mountain"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and all(w in warnings[0].getMessage() for w in ("tree", "sky", "railway"))
    with pytest.raises(ValueError, match="tree"):
        imagenet.encode_concepts(["tree"])


def test_imagenet_scores_are_probability_masses(imagenet):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 100, 80, requires_grad=True)
    feats = imagenet.encode_images(images)
    with torch.no_grad():
        x = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        probs = imagenet.net((x - mean) / std).softmax(-1)
    cat_idx = concept_indices("cat")
    mass = probs[:, cat_idx].sum(-1)
    concepts = imagenet.encode_concepts(["cat", "sea"])
    assert concepts.shape == (2, 1000) and concepts[0].sum() == len(cat_idx)
    torch.testing.assert_close(imagenet.logits(feats, concepts)[:, 0], mass.log(), rtol=1e-4, atol=1e-4)
    expected = torch.sigmoid(mass.log() - math.log(len(cat_idx) / 1000))
    torch.testing.assert_close(imagenet.similarity(feats, concepts)[:, 0], expected, rtol=1e-4, atol=1e-5)
    assert all(not p.requires_grad for p in imagenet.parameters())
    imagenet.similarity(feats, concepts).sum().backward()
    assert images.grad.abs().sum() > 0


def test_calibration_separates_classes_and_is_deterministic(voc_mini):
    ids = read_split(voc_mini, "train")[:32]
    images = torch.cat([_load(voc_mini, i) for i in ids])
    labels = torch.zeros(len(ids), 20)
    for n, i in enumerate(ids):
        labels[n, labels_of_mask(read_mask(mask_path(voc_mini, i)))] = 1
    person = CLASS_NAMES.index("person")
    assert 0 < labels[:, person].sum() < len(ids)
    matcher = ImageNetMatcher()
    with torch.no_grad():
        feats = matcher.encode_images(images)
        log_mass = matcher.logits(feats, matcher.encode_concepts(["person", "sea"]))
        chance_bias_scores = matcher.similarity(feats, matcher.encode_concepts(["person"]))[:, 0]
    fitted = matcher.calibrate(images, labels[:, [person]], ["person"], ["sea"])
    has = labels[:, person] > 0
    midpoint = 0.5 * (log_mass[has, 0].mean() + log_mass[~has, 0].mean())
    assert fitted["person"] == pytest.approx(float(midpoint), abs=1e-5)
    assert fitted["sea"] == pytest.approx(float(torch.quantile(log_mass[:, 1], 0.75)), abs=1e-5)
    assert ImageNetMatcher().calibrate(images, labels[:, [person]], ["person"], ["sea"]) == pytest.approx(fitted)
    with pytest.raises(ValueError, match="labels"):
        matcher.calibrate(images, labels, ["person"], ["sea"])  # one label column per class concept
    with torch.no_grad():
        s = matcher.similarity(feats, matcher.encode_concepts(["person", "ocean"]))
    # balanced accuracy of s > 0.5 beats chance and the uncalibrated (chance-level bias) scores;
    # the raw person mass itself is far below 0.5 everywhere
    def balanced_accuracy(scores: torch.Tensor) -> float:
        predicted = scores > 0.5
        return float(0.5 * (predicted[has].float().mean() + (~predicted[~has]).float().mean()))

    assert balanced_accuracy(s[:, 0]) > 0.68
    assert balanced_accuracy(s[:, 0]) > balanced_accuracy(chance_bias_scores) + 0.05
    assert log_mass[:, 0].exp().max() < 0.5
    # 'ocean' has the same ImageNet classes as 'sea', so it shares the calibrated bias
    assert (s[:, 1] > 0.5).float().mean() == pytest.approx(0.25, abs=1 / len(ids))


# ---- factory -----------------------------------------------------------------------------------
def test_factory_builds_both_kinds_and_refuses_others():
    assert isinstance(build_matcher("imagenet", temperature=2.0), ImageNetMatcher)
    matcher = build_matcher("open_clip", arch="tiny-rn", pretrained="none", prompt="a drawing of a {}.")
    assert isinstance(matcher, OpenClipMatcher) and matcher.prompt == "a drawing of a {}."
    assert matcher.input_size == 64
    with pytest.raises(ValueError, match="guide.kind"):
        build_matcher("clip-ish")
    with pytest.raises(ValueError, match="guide.temperature"):
        build_matcher("imagenet", temperature=0.0)
    with pytest.raises(ValueError, match="guide.prompt"):
        build_matcher("open_clip", arch="tiny-rn", pretrained="none", prompt="no slot")


# ---- synonyms ----------------------------------------------------------------------------------
def test_open_clip_synonyms_ensemble_the_prompts(monkeypatch):
    torch.manual_seed(0)
    matcher = OpenClipMatcher("tiny-vit", pretrained="none")
    before = matcher.encode_concepts(["tv monitor", "cat"])
    seen: list[list[str]] = []
    original = matcher._encode_concept_batch
    monkeypatch.setattr(matcher, "_encode_concept_batch", lambda cs: seen.append(list(cs)) or original(cs))
    matcher.set_synonyms({"tv monitor": ["television", "monitor", "tv monitor"]})  # own spelling ignored
    assert matcher.concept_names("tv monitor") == ["tv monitor", "television", "monitor"]
    after = matcher.encode_concepts(["tv monitor", "cat"])
    assert seen == [["tv monitor"]]  # only the changed class is re-encoded
    tokens = matcher.tokenizer([f"a photo of {n}." for n in ("tv monitor", "television", "monitor")])
    with torch.no_grad():
        expected = F.normalize(F.normalize(matcher.model.encode_text(tokens), dim=-1).mean(0), dim=-1)
    torch.testing.assert_close(after[0], expected)
    assert F.cosine_similarity(after[0], before[0], dim=0) < 0.999
    torch.testing.assert_close(after[1], before[1])
    matcher.set_synonyms({})  # back to the single prompt
    torch.testing.assert_close(matcher.encode_concepts(["tv monitor"])[0], before[0])
    with pytest.raises(ValueError, match="list of non-empty names"):
        matcher.set_synonyms({"sofa": "couch"})


def test_imagenet_synonyms_take_the_union_of_known_classes(caplog):
    matcher = ImageNetMatcher()
    tv = concept_indices("tvmonitor")
    assert torch.nonzero(matcher.encode_concepts(["tv monitor"])[0]).flatten().tolist() == sorted(tv)
    with caplog.at_level(logging.WARNING):
        matcher.set_synonyms({"tv monitor": ["keyboard", "television set", "flatscreen"]})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "television set" in warnings[0] and "flatscreen" in warnings[0]
    union = sorted(set(tv) | set(concept_indices("keyboard")))
    assert len(union) > len(tv)
    row = matcher.encode_concepts(["tv monitor"])[0]
    assert torch.nonzero(row).flatten().tolist() == union
    # the score is the probability mass on the union
    feats = F.log_softmax(torch.randn(2, 1000), dim=-1)
    expected = feats.exp()[:, union].sum(-1).log()
    torch.testing.assert_close(matcher.logits(feats, matcher.encode_concepts(["tv monitor"]))[:, 0], expected)


def test_imagenet_stand_in_stops_on_a_class_it_cannot_map_and_says_how(caplog):
    matcher = ImageNetMatcher()
    with pytest.raises(ValueError) as err:
        matcher.check_concepts(["cat", "kiwi fruit", "tractor"], background=False)
    message = str(err.value)
    assert "kiwi fruit" in message and "tractor" in message and "cat" not in message.split("class(es)")[1][:30]
    assert "guide.imagenet_classes" in message and "clims.synonyms" in message
    with pytest.raises(ValueError, match="kiwi fruit"):
        matcher.encode_concepts(["kiwi fruit"])  # never silently dropped


def test_imagenet_classes_from_params_map_a_new_class():
    matcher = ImageNetMatcher(imagenet_classes={"kiwi fruit": ["Granny Smith", 950], "tractor": ["tractor"]})
    assert matcher.check_concepts(["kiwi fruit", "tractor"], background=False) == ["kiwi fruit", "tractor"]
    row = matcher.encode_concepts(["kiwi fruit"])[0]
    assert torch.nonzero(row).flatten().tolist() == [948, 950]  # Granny Smith, orange
    with pytest.raises(ValueError, match=r"guide.imagenet_classes\['x'\]: 'no such thing'"):
        ImageNetMatcher(imagenet_classes={"x": ["no such thing"]})
    # a synonym the table knows maps a class too
    matcher.set_synonyms({"tomcat": ["cat"]})
    assert matcher.check_concepts(["tomcat"], background=False) == ["tomcat"]


def test_factory_passes_synonyms():
    matcher = build_matcher("open_clip", arch="tiny-rn", pretrained="none", synonyms={"sofa": ["couch"]})
    assert matcher.concept_names("sofa") == ["sofa", "couch"] and matcher.concept_names("cat") == ["cat"]


def test_matcher_from_params_attaches_synonyms_to_the_class_prompts():
    from textwsss.data.classes import VOC
    from textwsss.guide.factory import matcher_from_params
    from textwsss.params import ParamsError, parse_params

    params = parse_params({"clims": {"synonyms": {"tvmonitor": ["keyboard"]}}})
    matcher = matcher_from_params(params, VOC)
    assert matcher.concept_names("tv monitor") == ["tv monitor", "keyboard"]
    with pytest.raises(ParamsError, match="unicorn"):
        matcher_from_params(parse_params({"clims": {"synonyms": {"unicorn": ["horse"]}}}), VOC)
