from pathlib import Path

import pytest
import yaml

from textwsss.params import ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_are_valid():
    p = load_params(ROOT / "params.yaml")
    assert p.train_cam.loss in ("clims", "bce")
    assert p.eval_cam.thresholds.values()[0] == pytest.approx(0.05)
    assert p.eval_cam.thresholds.values()[-1] == pytest.approx(0.60)


def test_paper_config_is_valid():
    p = load_params(ROOT / "configs" / "voc2012_gpu.yaml")
    assert p.cam.backbone == "resnet50" and p.cam.init == "baseline" and p.clims.reduction == "official"
    assert p.guide.kind == "open_clip"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def test_quality_profile_changes_only_the_segmentation_recipe():
    """configs/voc-mini-quality.yaml is the demo with a longer segmentation recipe: a default changed in
    params.yaml and forgotten there would make the two runs differ in more than the README says."""
    demo = _flat(yaml.safe_load((ROOT / "params.yaml").read_text()))
    quality = _flat(yaml.safe_load((ROOT / "configs" / "voc-mini-quality.yaml").read_text()))
    load_params(ROOT / "configs" / "voc-mini-quality.yaml")
    assert demo.keys() == quality.keys()
    changed = {k for k in demo if demo[k] != quality[k]}
    assert changed and all(k.startswith(("train_seg.", "eval_seg.", "seg.")) for k in changed), changed


@pytest.mark.parametrize("raw, path, words", [
    ({"train_cam": {"lrr": 0.1}}, "train_cam.lrr", "unknown key"),
    ({"clims": {"gamma": "high"}}, "clims.gamma", "'high'"),
    ({"train_cam": {"epochs": 2.5}}, "train_cam.epochs", "integer"),
    ({"train_cam": {"lr": -1.0}}, "train_cam.lr", "greater than 0"),
    ({"pseudo_labels": {"crf": {"iterations": -1}}}, "pseudo_labels.crf.iterations", "greater than or equal to 0"),
    ({"clims": {"cbs_threshold": 1.5}}, "clims.cbs_threshold", "less than or equal to 1"),
    ({"device": "gpu"}, "device", "'auto', 'cpu', 'cuda'"),
    ({"train_cam": {"loss": "dice"}}, "train_cam.loss", "'clims' or 'bce'"),
    ({"data": {"layout": "kitti"}}, "data.layout", "'voc', 'voc_aug', 'coco' or 'tags'"),
    ({"data": {"classes": ["cat", "cat"]}}, "data.classes", "listed twice"),
    ({"guide": {"prompt": "a photo"}}, "guide.prompt", "{}"),
])
def test_bad_params_name_the_key(raw, path, words):
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    message = str(err.value)
    assert path in message and words in message


def test_all_problems_reported_at_once():
    with pytest.raises(ParamsError) as err:
        parse_params({"train_cam": {"lr": -1.0, "epochs": "x"}, "nonsense": 1})
    message = str(err.value)
    assert "3 invalid" in message
    assert "train_cam.lr" in message and "train_cam.epochs" in message and "nonsense" in message


def test_load_params_file_errors(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "p.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text(yaml.safe_dump({"seed": -3}))
    with pytest.raises(ParamsError, match=r"(?s)p.yaml.*seed"):
        load_params(bad)


def test_class_keyed_settings_are_checked_against_the_datasets_classes():
    from textwsss.data.classes import VOC, ClassList

    p = parse_params({"clims": {"background_words": {"boat": ["river", "sea"], "train": ["railroad"]},
                                "class_weights": {"dining table": 3.0}}})
    assert p.clims.background_words["boat"] == ["river", "sea"]
    p.clims.check_classes(VOC)  # class names and prompt names both work
    with pytest.raises(ParamsError, match=r"clims.background_words.*boat"):
        p.clims.check_classes(ClassList.of(["kiwi", "tractor"]))
    bad = parse_params({"clims": {"class_weights": {"sofaa": 2.0}}})
    with pytest.raises(ParamsError, match=r"clims.class_weights.*sofaa"):
        bad.clims.check_classes(VOC)


@pytest.mark.parametrize("raw, path, words", [
    ({"pseudo_labels": {"bg_threshold": 0.4, "fg_threshold": 0.3}}, "pseudo_labels",
     "bg_threshold 0.4 must not exceed fg_threshold 0.3"),
    ({"train_seg": {"scale_range": [1.5, 0.5]}}, "train_seg.scale_range", "low <= high"),
    ({"train_cam": {"scale_range": [2.0, 1.0]}}, "train_cam.scale_range", "low <= high"),
    ({"train_seg": {"scale_range": [0.5, 1.0, 1.5]}}, "train_seg.scale_range", "[low, high]"),
    ({"train_cam_baseline": {"resize_long": [384, 256]}}, "train_cam_baseline.resize_long", "low <= high"),
])
def test_ordered_pairs_are_checked(raw, path, words):
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    assert path in str(err.value) and words in str(err.value)


def test_equal_ends_of_ordered_pairs_are_allowed():
    # a fixed scale and seeds with no uncertain band are legitimate settings
    p = parse_params({"pseudo_labels": {"bg_threshold": 0.3, "fg_threshold": 0.3},
                      "train_seg": {"scale_range": [0.8, 0.8]}})
    assert p.pseudo_labels.bg_threshold == p.pseudo_labels.fg_threshold == 0.3
    assert p.train_seg.scale_range == [0.8, 0.8]


def _message(raw) -> str:
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    return str(err.value)


def test_messages_name_the_source_the_value_its_type_and_the_rule():
    # one line per problem: "<key path>: got <value> (<type>): <pydantic's message without 'Value error, '>"
    assert _message({"device": "gpu", "seed": "x"}) == (
        "params.yaml: 2 invalid parameter(s):\n"
        "  seed: got 'x' (str): Input should be a valid integer\n"
        "  device: got 'gpu' (str): expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    assert _message(5) == "params.yaml: expected a mapping of sections at the top level, got int"
    with pytest.raises(ParamsError, match=r"^p\.yaml: expected a mapping of sections at the top level, got list$"):
        parse_params([1], "p.yaml")


def test_an_empty_params_file_gives_the_defaults(tmp_path):
    empty = tmp_path / "params.yaml"
    empty.write_text("# nothing set\n")  # YAML reads None
    assert load_params(empty) == parse_params({}) == parse_params(None)
    assert load_params(empty).device == "auto" and load_params(empty).seed == 0


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:12"])
def test_device_strings_accepted(device):
    assert parse_params({"device": device}).device == device


@pytest.mark.parametrize("device", ["CPU", "cuda:", "cuda:x", "cuda:-1", "cuda1", "xxxxx1", "gpu:0", "mps"])
def test_device_strings_refused(device):
    assert _message({"device": device}).endswith(
        f"device: got {device!r} (str): expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def test_class_names_must_be_non_empty_and_distinct():
    assert _message({"data": {"classes": ["cat", " "]}}).endswith(
        "data.classes: got ['cat', ' '] (list): expected a preset name (voc, coco) or a non-empty list of class names")
    assert _message({"data": {"classes": []}}).endswith(
        "data.classes: got [] (list): expected a preset name (voc, coco) or a non-empty list of class names")
    # the duplicates named, each once, and only them
    assert _message({"data": {"classes": ["cat", "dog", "cat", "cow", "cow", "cow"]}}).endswith(
        "class names listed twice: ['cat', 'cow']")
    assert parse_params({"data": {"classes": ["cat", "dog"]}}).data.classes == ["cat", "dog"]


def test_prompt_template_needs_its_slot():
    assert _message({"guide": {"prompt": "a photo"}}).endswith(
        "guide.prompt: got 'a photo' (str): the prompt template must contain '{}' where the concept goes")


def test_ordered_pair_messages():
    assert _message({"train_seg": {"scale_range": [1.5, 0.5]}}).endswith(
        "train_seg.scale_range: got [1.5, 0.5] (list): expected [low, high] with low <= high")
    assert _message({"train_cam": {"resize_long": [384, 256]}}).endswith(
        "train_cam.resize_long: got [384, 256] (list): expected [low, high] with low <= high")
    assert _message({"eval_cam": {"thresholds": {"start": 0.5, "stop": 0.4}}}).endswith(
        "eval_cam.thresholds: got {'start': 0.5, 'stop': 0.4} (dict): start 0.5 is above stop 0.4")


def test_a_sweep_of_one_threshold_and_a_fixed_resize_are_allowed():
    p = parse_params({"eval_cam": {"thresholds": {"start": 0.3, "stop": 0.3}},
                      "train_cam": {"resize_long": [320, 320]}})
    assert p.eval_cam.thresholds.values() == [0.3]
    assert p.train_cam.resize_long == [320, 320]


def test_every_unknown_class_of_the_class_keyed_settings_is_reported():
    from textwsss.data.classes import VOC

    parse_params({}).clims.check_classes(VOC)  # the default background words are a list: no class names in it
    bad = parse_params({"clims": {"synonyms": {"sofaa": ["couch"]}, "class_prompts": {"persn": "player"},
                                  "background_words": {"boat": ["sea"]}}})
    with pytest.raises(ParamsError) as err:
        bad.clims.check_classes(VOC)
    assert str(err.value) == ("clims.synonyms: unknown class names ['sofaa']\n"
                              "clims.class_prompts: unknown class names ['persn']\n"
                              f"(the dataset's classes are {list(VOC.names)})")


def test_an_empty_top_level_key_is_named_as_the_top_level():
    # YAML `"": 3` at the top: the key path is empty, so the message says where instead
    assert _message({"": 3}) == ("params.yaml: 1 invalid parameter(s):\n"
                                 "  (top level): unknown key (value 3); check the spelling against the documented keys")


@pytest.mark.parametrize("width", [4, 32, 64])
def test_relation_network_width_fits_its_group_norm(width):
    assert parse_params({"train_irn": {"width": width}}).train_irn.width == width


@pytest.mark.parametrize("width", [2, 30, 33])
def test_relation_network_width_not_a_multiple_of_4_is_refused(width):
    assert _message({"train_irn": {"width": width}}).endswith(
        f"train_irn.width: got {width} (int): expected a multiple of 4 (each level's GroupNorm has 4 groups)")
