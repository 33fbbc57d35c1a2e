"""The imagenet stand-in's concept table covers the 80 MS COCO class names honestly.

No model is loaded: these tests read only textwsss/guide/imagenet_concepts.json and torchvision's category list.
"""
from collections import defaultdict

import pytest
from torchvision.models import ResNet50_Weights

from textwsss.data.classes import COCO_NAMES
from textwsss.guide.imagenet_matcher import concept_indices, load_concept_table

CATEGORIES = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
BIRD_KITE = 21  # ImageNet 'kite' is the bird of prey, not the toy
RODENTS = range(330, 339)  # wood rabbit .. guinea pig (rabbits, hamster, squirrel, marmot, beaver, ...)


def _resolved_key(name: str) -> tuple[str, str]:
    """(section, key) a name is looked up under, as concept_indices does it."""
    table = load_concept_table()
    key = name.strip().lower()
    key = table["aliases"].get(key, key)
    for section in ("classes", "background"):
        if key in table[section]:
            return section, key
    raise KeyError(name)


def _coco_entries() -> dict[str, dict]:
    table = load_concept_table()
    out = {}
    for name in COCO_NAMES:
        section, key = _resolved_key(name)
        out[name] = table[section][key]
    return out


def test_coco_names_are_the_80_classes():
    assert len(COCO_NAMES) == 80 and len(set(COCO_NAMES)) == 80


@pytest.mark.parametrize("name", COCO_NAMES)
def test_every_coco_class_resolves(name):
    indices = concept_indices(name)
    assert indices, f"COCO class {name!r} does not resolve through imagenet_concepts.json"
    assert all(0 <= i < 1000 for i in indices)
    assert concept_indices(name.upper()) == indices  # lookups are case-insensitive


def test_coco_entries_name_the_right_imagenet_classes():
    for name, entry in _coco_entries().items():
        indices = entry["imagenet_indices"]
        assert [CATEGORIES[i] for i in indices] == entry["imagenet_names"], name
        assert indices == sorted(set(indices)), f"{name}: indices not sorted / duplicated"


def test_notes_are_strings_and_ignored_by_the_loader():
    table = load_concept_table()
    notes = {k: e["note"] for k, e in table["classes"].items() if "note" in e}
    assert notes, "the proxy entries should explain themselves in 'note'"
    for key, note in notes.items():
        assert isinstance(note, str) and note.strip(), key
        assert set(table["classes"][key]) == {"imagenet_indices", "imagenet_names", "note"}, key
        assert concept_indices(key) == table["classes"][key]["imagenet_indices"], key


def test_kite_is_not_the_bird():
    kite = concept_indices("kite")
    assert BIRD_KITE not in kite
    assert not set(kite) & set(concept_indices("bird")), "the toy kite must not score any bird class"


def test_mouse_is_the_computer_mouse():
    mouse = concept_indices("mouse")
    assert 673 in mouse and CATEGORIES[673] == "mouse"
    assert not set(mouse) & set(RODENTS), [CATEGORIES[i] for i in mouse]


def test_keyboard_is_both_a_coco_class_and_a_background_word():
    table = load_concept_table()
    assert "keyboard" in table["background"]
    assert concept_indices("keyboard") == table["background"]["keyboard"]["imagenet_indices"]
    if "keyboard" in table["classes"]:
        assert table["classes"]["keyboard"]["imagenet_indices"] == table["background"]["keyboard"]["imagenet_indices"]


def test_aliases_resolve_like_their_targets():
    table = load_concept_table()
    known = set(table["classes"]) | set(table["background"])
    for alias, target in table["aliases"].items():
        assert alias == alias.lower() and target in known, (alias, target)
        assert concept_indices(alias) == concept_indices(target), (alias, target)
    assert concept_indices("tv") == concept_indices("tvmonitor")
    assert concept_indices("airplane") == concept_indices("aeroplane")
    assert concept_indices("couch") == concept_indices("sofa")


def test_distinct_coco_classes_have_distinct_class_sets():
    """The matcher keys calibrated biases by class set, so two COCO classes with the same set would be the same
    concept to it. Only names that are aliases of each other (same resolved key) may share one."""
    by_set: dict[tuple[int, ...], set[tuple[str, str]]] = defaultdict(set)
    for name in COCO_NAMES:
        by_set[tuple(concept_indices(name))].add(_resolved_key(name))
    clashes = {s: sorted(keys) for s, keys in by_set.items() if len(keys) > 1}
    assert not clashes, "distinct COCO classes with identical ImageNet class sets:\n" + "\n".join(
        f"  {[k for _, k in keys]}: {[CATEGORIES[i] for i in s]}" for s, keys in clashes.items())
