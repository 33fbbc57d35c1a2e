"""The layouts' scans on tiny hand-made folders (fast: a scan decodes no image): what each finds, and every
problem it reports, word for word. The voc-mini based tests (test_layouts.py) check the same layouts end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from textwsss.data.classes import COCO_NAMES, VOC_NAMES, ClassList
from textwsss.data.layouts import scan
from textwsss.data.layouts.coco import _classes as coco_classes, _rasteriser, scan_coco
from textwsss.data.layouts.tags import _classes as tags_classes, _rows, scan_tags
from textwsss.data.layouts.voc import read_cls_labels, read_split_file, scan_voc, voc_classes
from textwsss.params import DataParams


def _data(root, **kw) -> DataParams:
    return DataParams(root=str(root), **kw)


# ---- dispatch ------------------------------------------------------------------------------------------------------
def test_scan_dispatches_on_the_layout(tmp_path):
    missing = tmp_path / "nowhere"
    for layout in ("voc", "voc_aug", "coco", "tags"):
        found = scan(_data(missing, layout=layout))
        assert found.layout == layout and found.root == missing
        assert found.problems[0] == f"{missing}: data root not found (params data.root)"
    data = _data(missing).model_copy(update={"layout": "kitti"})  # past the params' own check
    with pytest.raises(ValueError, match=r"^data.layout: expected one of \('voc', 'voc_aug', 'coco', 'tags'\), "
                                         r"got 'kitti'$"):
        scan(data, missing)


def test_scan_resolves_the_root_from_the_params_and_passes_the_roles(tmp_path):
    root = _voc_root(tmp_path / "voc", {"train": ["a"], "val": ["b"]})
    found = scan(_data(root), roles=("val",))
    assert found.splits == {"val": ["b"]} and found.root == root


# ---- voc ---------------------------------------------------------------------------------------------------------
def _voc_root(root: Path, lists: dict[str, list[str]], masks: str = "SegmentationClass") -> Path:
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / masks).mkdir()
    for split, ids in lists.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for i in ids:
            (root / masks / f"{i}.png").write_bytes(b"")
    return root


def test_voc_classes_preset_or_own_list_with_prompts():
    assert voc_classes(DataParams()).names == tuple(VOC_NAMES)
    voc = voc_classes(DataParams(classes="voc", prompts={"aeroplane": "jet"}))
    assert voc.names == tuple(VOC_NAMES) and voc.prompts[0] == "jet"
    assert voc_classes(DataParams(prompts={"sofa": "couch"})).prompts[VOC_NAMES.index("sofa")] == "couch"
    coco = voc_classes(DataParams(classes="coco", prompts={"person": "human"}))
    assert coco.names == tuple(COCO_NAMES) and coco.prompts[0] == "human"
    own = voc_classes(DataParams(classes=["red_fox", "owl"], prompts={"owl": "barn owl"}))
    assert own == ClassList(("red_fox", "owl"), ("red fox", "barn owl"))


def test_split_files_plain_and_deeplab_lines(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("2007_000032\n\n  2007_000039  \n/JPEGImages/2007_000063.jpg /SegmentationClassAug/2007_000063.png\n"
                    "x.jpg y.png\nsub/z.jpg\nframe_1.5\n")
    # a plain id is taken as it is (a dot in it is no suffix), a path gives its file name's stem
    assert read_split_file(path) == ["2007_000032", "2007_000039", "2007_000063", "x", "z", "frame_1.5"]


def test_cls_labels_keys_vectors_and_problems(tmp_path, monkeypatch):
    classes = ClassList(("a", "b", "c"), ("a", "b", "c"))
    path = tmp_path / "cls_labels.npy"
    np.save(path, {2007000032: np.array([1.0, 0.0, 1.0]),  # IRN's integer id
                   np.int64(2008000001): np.array([[0.0, 1.0, 0.0]]),  # a numpy integer, a (1, 3) vector
                   "2009000002": [0.5, 0.51, 0.0],  # a string id stays as it is; exactly 0.5 is not a label
                   123: [0, 0, 1],  # an integer id of another length stays as it is
                   "short": [1, 0],
                   "long": [1, 0, 0, 1],
                   "after": [0, 0, 0]}, allow_pickle=True)
    problems = []
    labels = read_cls_labels(path, classes, problems)
    assert labels == {"2007_000032": [0, 2], "2008_000001": [1], "2009000002": [1], "123": [2], "after": []}
    assert problems == [f"{path}: labels of 'short' have 2 entries, expected 3 (one per class)",
                        f"{path}: labels of 'long' have 4 entries, expected 3 (one per class)"]
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    problems = []
    assert read_cls_labels(tmp_path / "bad.npy", classes, problems) == {}
    assert len(problems) == 1 and problems[0].startswith(f"{tmp_path / 'bad.npy'}: not a pickled dict of "
                                                         f"image-level labels (")
    np.save(tmp_path / "array.npy", np.zeros(3))  # an array, not a dict: .item() fails
    problems = []
    assert read_cls_labels(tmp_path / "array.npy", classes, problems) == {} and len(problems) == 1


def test_voc_scan_finds_splits_images_and_masks(tmp_path):
    root = _voc_root(tmp_path / "voc", {"train": ["a", "b"], "val": ["c"]})
    found = scan_voc(root, _data(root))
    assert found.layout == "voc" and found.root == root and found.classes.names == tuple(VOC_NAMES)
    assert found.splits == {"train": ["a", "b"], "val": ["c"]} and found.problems == []
    assert found.images == {i: root / "JPEGImages" / f"{i}.jpg" for i in "abc"}
    assert found.masks == {i: root / "SegmentationClass" / f"{i}.png" for i in "abc"}
    assert found.tags == {} and found.mask_makers == {}
    lists = root / "ImageSets" / "Segmentation"
    assert found.sources == [lists / "train.txt", lists / "val.txt"]


def test_voc_aug_and_own_folders(tmp_path):
    root = _voc_root(tmp_path / "voc", {"train_aug": ["a"], "train": ["a"], "val": ["c"]},
                     masks="SegmentationClassAug")
    found = scan_voc(root, _data(root, layout="voc_aug", train_split="train_aug", score_split="train"))
    assert found.layout == "voc_aug" and found.problems == []
    assert found.splits == {"train": ["a"], "val": ["c"], "score": ["a"]}
    assert found.masks["a"] == root / "SegmentationClassAug" / "a.png"
    lists = root / "ImageSets" / "Segmentation"
    assert found.sources == [lists / "train_aug.txt", lists / "val.txt", lists / "train.txt"]
    own = scan_voc(root, _data(root, images="pics", masks="labels"))
    assert own.images["c"] == root / "pics" / "c.jpg" and own.masks["c"] == root / "labels" / "c.png"


def test_voc_roles_read_only_their_lists(tmp_path):
    root = _voc_root(tmp_path / "voc", {"tr": ["a"], "sc": ["a"], "va": ["c"]})
    data = _data(root, train_split="tr", val_split="va", score_split="sc")
    assert scan_voc(root, data, ("val",)).splits == {"val": ["c"]}
    assert scan_voc(root, data, ("train",)).splits == {"train": ["a"], "score": ["a"]}
    assert scan_voc(root, data).splits == {"train": ["a"], "val": ["c"], "score": ["a"]}


def test_voc_problems_in_one_list(tmp_path):
    root = _voc_root(tmp_path / "voc", {"train": ["a", "b", "a", "b", "d"], "sc": ["a", "x", "y"],
                                        "val": ["c", "d"]})
    lists = root / "ImageSets" / "Segmentation"
    found = scan_voc(root, _data(root, score_split="sc"))
    assert found.splits == {"train": ["a", "b", "d"], "val": ["c", "d"], "score": ["a", "x", "y"]}
    assert found.problems == [
        f"{lists / 'train.txt'}: ids listed twice: ['a', 'b']",
        f"{lists / 'sc.txt'}: 2 score id(s) not in the train split 'train': ['x', 'y']",
        f"{root}/ImageSets/Segmentation: 1 id(s) in both 'train' and 'val', which must not overlap: ['d']",
    ]
    missing = scan_voc(root, _data(root, val_split="test", train_split="tr"))
    assert missing.problems == [f"{lists / 'tr.txt'}: split list 'tr' not found (params data.train_split)",
                                f"{lists / 'test.txt'}: split list 'test' not found (params data.val_split)"]
    assert missing.splits == {}


def test_voc_a_missing_root_is_the_only_problem(tmp_path):
    found = scan_voc(tmp_path / "none", _data(tmp_path / "none", layout="voc_aug"))
    assert found.layout == "voc_aug" and found.root == tmp_path / "none"
    assert found.problems == [f"{tmp_path / 'none'}: data root not found (params data.root)"]
    assert found.splits == {} and found.sources == []


def test_voc_labels_file_gives_tags_and_masks_become_optional(tmp_path):
    root = _voc_root(tmp_path / "voc", {"train": ["a", "b", "e"], "val": ["c", "f"]})
    (root / "SegmentationClass" / "b.png").unlink()
    (root / "SegmentationClass" / "f.png").unlink()
    vector = np.zeros(20)
    vector[[2, 5]] = 1
    np.save(root / "cls.npy", {"a": vector, "b": vector, "c": vector}, allow_pickle=True)
    found = scan_voc(root, _data(root, labels="cls.npy"))
    assert found.tags == {"a": [2, 5], "b": [2, 5], "c": [2, 5]}
    assert sorted(found.masks) == ["a", "c", "e"]  # b and f have no mask file: fine with labels
    # a train id without labels is a problem, a val id is not (val is scored on its mask)
    assert found.problems == [f"{root / 'cls.npy'}: no image-level labels for train id 'e'"]
    assert found.sources[-1] == root / "cls.npy"
    gone = scan_voc(root, _data(root, labels="nope.npy"))
    assert gone.problems == [f"{root / 'nope.npy'}: image-level labels file not found (params data.labels)"]
    assert sorted(gone.masks) == ["a", "b", "c", "e", "f"]  # without labels every id needs its mask (named later)


# ---- coco ----------------------------------------------------------------------------------------------------------
def _square(x0, y0, x1, y1) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _coco_root(root: Path, splits: dict[str, dict]) -> Path:
    (root / "annotations").mkdir(parents=True)
    for split, content in splits.items():
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))
    return root


CATS = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}, {"id": 11, "name": "owl"}]


def test_coco_classes_from_the_categories_in_id_order_or_the_params():
    problems = []
    assert coco_classes(DataParams(layout="coco"), CATS, Path("f.json"), problems) == \
        ClassList(("dog", "cat", "owl"), ("dog", "cat", "owl"))
    prompted = coco_classes(DataParams(layout="coco", prompts={"owl": "barn owl"}), CATS, Path("f.json"), problems)
    assert prompted.prompts == ("dog", "cat", "barn owl")
    own = coco_classes(DataParams(layout="coco", classes=["owl", "dog", "cat", "hen"], prompts={"hen": "chicken"}),
                       CATS, Path("f.json"), problems)
    assert own == ClassList(("owl", "dog", "cat", "hen"), ("owl", "dog", "cat", "chicken")) and problems == []
    preset = coco_classes(DataParams(layout="coco", classes="voc", prompts={"cat": "kitty"}), CATS, Path("f.json"),
                          problems)
    assert preset.names == tuple(VOC_NAMES) and preset.prompts[VOC_NAMES.index("cat")] == "kitty"
    names = [f"c{i}" for i in range(12)]
    coco_classes(DataParams(layout="coco", classes=["c0"]), [{"id": i, "name": n} for i, n in enumerate(names)],
                 Path("f.json"), problems)
    # the first 10 unknown names, in id order
    assert problems == ["f.json: categories ['owl'] are not in the class list data.classes",  # voc has dog, cat
                        f"f.json: categories {names[1:11]} are not in the class list data.classes"]


def test_rasterised_mask_paints_larger_instances_first_and_reads_every_segmentation_form():
    from pycocotools import mask as mask_utils

    label_of = {7: 2, 3: 1}
    small_rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((2, 2), np.uint8), ((4, 4), (4, 4)))[:8, :10]))
    small_rle["counts"] = small_rle["counts"].decode()
    # uncompressed RLE (column-major run lengths) of rows 0-1 of column 9 in an 8 x 10 image
    column = {"counts": [72, 2, 6], "size": [8, 10]}
    anns = [{"category_id": 7, "segmentation": small_rle, "area": 4.0},  # compressed RLE, painted last
            {"category_id": 3, "segmentation": _square(0, 0, 8, 8), "area": 64.0},  # polygon, largest: first
            {"category_id": 7, "segmentation": column},  # no area: counted 0, so painted after the next one
            {"category_id": 3, "segmentation": {"counts": [72, 1, 7], "size": [8, 10]}, "area": 0.5}]
    mask = _rasteriser((8, 10), anns, label_of)()
    assert mask.dtype == np.uint8 and mask.shape == (8, 10)
    expected = np.zeros((8, 10), np.uint8)
    polygon = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(_square(0, 0, 8, 8), 8, 10))).astype(bool)
    expected[polygon] = 1
    expected[4:6, 4:6] = 2
    expected[0:2, 9] = 2
    np.testing.assert_array_equal(mask, expected)
    assert polygon[:7, :7].all() and not polygon[:, 9].any()


def test_coco_scan_finds_images_tags_masks_and_sources(tmp_path):
    train = {"categories": CATS,
             "images": [{"id": 1, "file_name": "COCO_x_1.jpg", "height": 8, "width": 10},
                        {"id": 2, "file_name": "COCO_x_2.jpg", "height": 4, "width": 4}],
             "annotations": [{"id": 10, "image_id": 1, "category_id": 11, "segmentation": _square(0, 0, 3, 3),
                              "area": 9.0},
                             {"id": 11, "image_id": 1, "category_id": 3, "segmentation": _square(1, 1, 2, 2)},
                             {"id": 12, "image_id": 1, "category_id": 11, "segmentation": _square(4, 4, 5, 5)}]}
    val = {"categories": CATS, "images": [{"id": 1, "file_name": "COCO_v_1.jpg", "height": 8, "width": 8}],
           "annotations": []}
    root = _coco_root(tmp_path / "coco", {"tr": train, "va": val})
    found = scan_coco(root, _data(root, layout="coco", train_split="tr", val_split="va"))
    assert found.problems == [] and found.layout == "coco" and found.root == root
    assert found.classes.names == ("dog", "cat", "owl")
    assert found.splits == {"train": ["COCO_x_1", "COCO_x_2"], "val": ["COCO_v_1"]}
    assert found.images == {"COCO_x_1": root / "tr" / "COCO_x_1.jpg", "COCO_x_2": root / "tr" / "COCO_x_2.jpg",
                            "COCO_v_1": root / "va" / "COCO_v_1.jpg"}
    assert found.tags == {"COCO_x_1": [0, 2], "COCO_x_2": [], "COCO_v_1": []}
    assert found.sources == [root / "annotations" / "instances_tr.json", root / "annotations" / "instances_va.json"]
    assert found.masks == {} and sorted(found.mask_makers) == ["COCO_v_1", "COCO_x_1", "COCO_x_2"]
    mask = found.mask_makers["COCO_x_1"]()
    assert mask.shape == (8, 10) and mask[0, 0] == 3 and mask[1, 1] == 1 and mask[4, 4] == 3
    assert found.mask_makers["COCO_x_2"]().shape == (4, 4) and not found.mask_makers["COCO_x_2"]().any()
    # pre-converted masks and another image folder
    own = scan_coco(root, _data(root, layout="coco", train_split="tr", val_split="va", masks="labels", images="all"))
    assert own.masks == {i: root / "labels" / f"{i}.png" for i in ("COCO_x_1", "COCO_x_2", "COCO_v_1")}
    assert own.mask_makers == {} and own.images["COCO_v_1"] == root / "all" / "COCO_v_1.jpg"
    # roles: val alone reads only its file, and its categories
    alone = scan_coco(root, _data(root, layout="coco", train_split="tr", val_split="va"), ("val",))
    assert alone.splits == {"val": ["COCO_v_1"]} and alone.sources == [root / "annotations" / "instances_va.json"]
    assert alone.problems == [] and alone.classes.names == ("dog", "cat", "owl")


def test_coco_problems_in_one_list(tmp_path):
    train = {"categories": CATS,
             "images": [{"id": 1, "file_name": "a.jpg", "height": 2, "width": 2},
                        {"id": 2, "file_name": "b.jpg", "height": 2, "width": 2},
                        {"id": 3, "file_name": "sub/a.jpg", "height": 2, "width": 2}],
             "annotations": [{"id": 5, "image_id": 1, "category_id": 99, "segmentation": []},
                             {"id": 6, "image_id": 42, "category_id": 3, "segmentation": []},
                             {"id": 7, "image_id": 43, "category_id": 3, "segmentation": []},
                             {"id": 8, "image_id": 2, "category_id": 3, "segmentation": []}]}
    val = {"categories": CATS, "images": [{"id": 1, "file_name": "b.jpg", "height": 2, "width": 2}],
           "annotations": []}
    root = _coco_root(tmp_path / "coco", {"tr": train, "va": val})
    found = scan_coco(root, _data(root, layout="coco", train_split="tr", val_split="va", score_split="x"))
    path = root / "annotations" / "instances_tr.json"
    assert found.problems == [
        "data.score_split: the coco layout scores every train image that has annotations; leave it empty",
        f"{path}: annotation 5 has unknown category_id 99",
        f"{path}: annotations refer to image ids [42, 43] that the file does not list",
        f"{path}: images listed twice: ['a']",
        f"{root}/annotations: 1 image(s) in both 'tr' and 'va': ['b']",
    ]
    assert found.splits["train"] == ["a", "b"]


def test_coco_files_that_cannot_be_used(tmp_path):
    root = _coco_root(tmp_path / "coco", {"tr": {"images": [], "annotations": []}})
    (root / "annotations" / "instances_va.json").write_text("{oops")
    found = scan_coco(root, _data(root, layout="coco", train_split="tr", val_split="va"))
    assert found.problems[0] == (f"{root / 'annotations' / 'instances_tr.json'}: missing keys ['categories'] of a "
                                 f"COCO instances file")
    assert found.problems[1].startswith(f"{root / 'annotations' / 'instances_va.json'}: not readable JSON (")
    assert len(found.problems) == 2 and found.splits == {}
    assert found.classes.names == tuple(COCO_NAMES)  # nothing loaded: the COCO preset
    prompted = scan_coco(root, _data(root, layout="coco", train_split="tr", val_split="va", prompts={"tv": "screen"}))
    assert prompted.classes.prompts[COCO_NAMES.index("tv")] == "screen"
    gone = scan_coco(root, _data(root, layout="coco", train_split="nope", val_split="va"), ("train",))
    assert gone.problems == [f"{root / 'annotations' / 'instances_nope.json'}: instances JSON of split 'nope' not "
                             f"found (params data.train_split)"]
    missing = scan_coco(tmp_path / "none", _data(tmp_path / "none", layout="coco"))
    assert missing.problems == [f"{tmp_path / 'none'}: data root not found (params data.root)"]


def test_coco_categories_come_from_the_train_file_when_both_are_read(tmp_path):
    train = {"categories": CATS, "images": [], "annotations": []}
    val = {"categories": [{"id": 1, "name": "hen"}], "images": [], "annotations": []}
    root = _coco_root(tmp_path / "coco", {"tr": train, "va": val})
    found = scan_coco(root, _data(root, layout="coco", train_split="tr", val_split="va"))
    assert found.classes.names == ("dog", "cat", "owl")
    # with data.classes the unknown names are reported against the train file
    named = scan_coco(root, _data(root, layout="coco", train_split="tr", val_split="va", classes=["dog"]))
    assert named.problems[0] == (f"{root / 'annotations' / 'instances_tr.json'}: categories ['cat', 'owl'] are not "
                                 f"in the class list data.classes")
    only_val = scan_coco(root, _data(root, layout="coco", train_split="tr", val_split="va", classes=["dog"]),
                         ("val",))
    assert only_val.problems[0] == (f"{root / 'annotations' / 'instances_va.json'}: categories ['hen'] are not "
                                    f"in the class list data.classes")


# ---- tags ----------------------------------------------------------------------------------------------------------
def _tags_root(root: Path, tags_file: str | None, content: str = "", classes: str | None = "red_fox\nowl\noak\n"):
    (root / "images").mkdir(parents=True)
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    if tags_file:
        (root / tags_file).write_text(content)
    return root


def test_tags_classes_from_the_params_or_classes_txt(tmp_path):
    problems = []
    root = _tags_root(tmp_path / "t", None, classes="\n red_fox \n\nowl\n")
    assert tags_classes(root, DataParams(layout="tags", prompts={"owl": "barn owl"}), problems) == \
        ClassList(("red_fox", "owl"), ("red fox", "barn owl"))
    assert tags_classes(root, DataParams(layout="tags", classes=["hen"], prompts={"hen": "chicken"}), problems) == \
        ClassList(("hen",), ("chicken",))
    voc = tags_classes(root, DataParams(layout="tags", classes="voc", prompts={"cat": "kitty"}), problems)
    assert voc.names == tuple(VOC_NAMES) and voc.prompts[VOC_NAMES.index("cat")] == "kitty"
    assert problems == []
    (root / "classes.txt").write_text("owl\nowl\n")
    assert tags_classes(root, DataParams(layout="tags"), problems) is None
    assert problems == [f"{root / 'classes.txt'}: class list: classes named twice: ['owl']"]
    (root / "classes.txt").unlink()
    problems = []
    assert tags_classes(root, DataParams(layout="tags"), problems) is None
    assert problems == [f"{root / 'classes.txt'}: no class list; write the class names there, one per line, or set "
                        f"data.classes"]


def test_tags_rows_of_csv_files(tmp_path):
    path = tmp_path / "tags.csv"
    path.write_text("image,tags,split\n a.jpg , owl; oak |,train\nb.jpg,,\n,owl,val\n")
    problems = []
    assert _rows(path, problems) == [(f"{path}:2", "a.jpg", ["owl", "oak"], "train"), (f"{path}:3", "b.jpg", [], None),
                                     (f"{path}:4", "", ["owl"], "val")]
    path.write_text("image,tags\na.jpg,owl|oak\n")
    assert _rows(path, problems) == [(f"{path}:2", "a.jpg", ["owl", "oak"], None)] and problems == []
    path.write_text("file,labels\na.jpg,owl\n")
    assert _rows(path, problems) == []
    assert problems == [f"{path}: expected a header with columns 'image' and 'tags' (and optionally 'split'), "
                        f"got ['file', 'labels']"]
    for header in ("image,labels", "file,tags"):  # one of the two columns is not enough
        path.write_text(f"{header}\na.jpg,owl\n")
        problems = []
        assert _rows(path, problems) == [] and problems[0].endswith(f"got {header.split(',')}")
    path.write_text("")
    problems = []
    assert _rows(path, problems) == [] and problems[0].endswith("got []")
    path.write_bytes(b"image,tags\n\xff\xfe,owl\n")
    problems = []
    assert _rows(path, problems) == []
    assert problems[0].startswith(f"{path}: not a readable CSV file (")


def test_tags_rows_of_json_files(tmp_path):
    path = tmp_path / "tags.json"
    path.write_text(json.dumps([{"image": "a.jpg", "tags": ["owl", 3], "split": "val"}, {"image": 7},
                                {"image": "c.jpg", "tags": "owl"}, ["d.jpg"], {"tags": []}]))
    problems = []
    assert _rows(path, problems) == [(f"{path} entry 0", "a.jpg", ["owl", "3"], "val"),
                                     (f"{path} entry 1", "7", [], None)]
    assert problems == [f"{path} entry 2: expected {{'image': ..., 'tags': [...]}}, got {{'image': 'c.jpg', 'tags': "
                        f"'owl'}}",
                        f"{path} entry 3: expected {{'image': ..., 'tags': [...]}}, got ['d.jpg']",
                        f"{path} entry 4: expected {{'image': ..., 'tags': [...]}}, got {{'tags': []}}"]
    path.write_text(json.dumps({"a.jpg": ["owl"], "b/c.png": []}))
    assert _rows(path, []) == [(f"{path} entry 0", "a.jpg", ["owl"], None), (f"{path} entry 1", "b/c.png", [], None)]
    path.write_text(json.dumps([{"image": "x" * 200, "tags": 1}]))
    problems = []
    _rows(path, problems)
    assert problems == [f"{path} entry 0: expected {{'image': ..., 'tags': [...]}}, got "
                        f"{str({'image': 'x' * 200, 'tags': 1})[:80]}"]
    path.write_text("[{")
    problems = []
    assert _rows(path, problems) == [] and problems[0].startswith(f"{path}: not readable JSON (")
    upper = tmp_path / "TAGS.JSON"
    upper.write_text(json.dumps({"a.jpg": []}))
    assert _rows(upper, []) == [(f"{upper} entry 0", "a.jpg", [], None)]


def test_tags_scan_finds_ids_tags_splits_and_masks(tmp_path):
    root = _tags_root(tmp_path / "t", "tags.csv",
                      "image,tags,split\nsub/fox.jpg,red fox;OAK,train\nowl.png,owl,val\noak.jpg,oak,train\n")
    (root / "masks" / "sub").mkdir(parents=True)
    (root / "masks" / "sub" / "fox.png").write_bytes(b"")
    found = scan_tags(root, DataParams(layout="tags", root=str(root)))
    assert found.problems == [] and found.layout == "tags" and found.root == root
    assert found.classes.names == ("red_fox", "owl", "oak")
    assert found.splits == {"train": ["sub/fox", "oak"], "val": ["owl"]}
    assert found.images == {"sub/fox": root / "images" / "sub/fox.jpg", "owl": root / "images" / "owl.png",
                            "oak": root / "images" / "oak.jpg"}
    assert found.tags == {"sub/fox": [0, 2], "owl": [1], "oak": [2]}  # names, prompts, any case
    assert found.masks == {"sub/fox": root / "masks" / "sub" / "fox.png"}
    assert found.sources == [root / "classes.txt", root / "tags.csv"]
    val = scan_tags(root, DataParams(layout="tags", root=str(root)), ("val",))
    assert val.splits == {"val": ["owl"]} and sorted(val.images) == ["owl"]
    own = scan_tags(root, DataParams(layout="tags", root=str(root), classes=["red_fox", "owl", "oak"], images="pics",
                                     masks="labels", train_split="tr", val_split="train"))
    assert own.sources == [root / "tags.csv"]  # classes.txt is not read
    assert own.splits == {"train": [], "val": ["sub/fox", "oak"]} and own.masks == {}
    assert own.images["oak"] == root / "pics" / "oak.jpg"
    assert own.problems == [f"{root / 'tags.csv'}:3: split 'val' is neither data.train_split 'tr' nor "
                            f"data.val_split 'train'"]


def test_tags_scan_problems_in_one_list(tmp_path):
    root = _tags_root(tmp_path / "t", "tags.csv",
                      "image,tags,split\na.jpg,owl,train\n,owl,train\na.png,oak,train\nb.jpg,wolf;owl;bear,train\n"
                      "c.jpg,oak,test\nd\\e.jpg,oak,\n")
    found = scan_tags(root, DataParams(layout="tags", root=str(root), score_split="s"))
    path = root / "tags.csv"
    assert found.problems == [
        f"{path}:3: empty image name",
        f"{path}:4: image 'a.png' listed twice (first at {path}:2)",
        f"{path}:5: tags ['wolf', 'bear'] name no class of the class list ['red_fox', 'owl', 'oak']",
        f"{path}:6: split 'test' is neither data.train_split 'train' nor data.val_split 'val'",
        "data.score_split: the tags layout scores every train image that has a mask; leave it empty",
    ]
    assert found.splits == {"train": ["a", "d/e"], "val": []}  # a row without a split is a train row


def test_tags_files_found_or_named(tmp_path):
    root = _tags_root(tmp_path / "t", "tags.json", json.dumps({"a.jpg": ["owl"]}))
    found = scan_tags(root, DataParams(layout="tags", root=str(root)))
    assert found.splits == {"train": ["a"], "val": []} and found.sources[-1] == root / "tags.json"
    named = scan_tags(root, DataParams(layout="tags", root=str(root), labels="mine.csv"))
    assert named.problems == [f"{root / 'mine.csv'}: tags file not found (params data.labels: a .csv or .json file)"]
    assert named.splits == {}
    (root / "tags.json").unlink()
    none = scan_tags(root, DataParams(layout="tags", root=str(root)))
    assert none.problems == [f"{root / 'tags.csv'}: tags file not found (params data.labels: a .csv or .json file)"]
    (root / "mine.json").write_text(json.dumps([{"image": "z.jpg", "tags": ["oak"], "split": "val"}]))
    chosen = scan_tags(root, DataParams(layout="tags", root=str(root), labels="mine.json"))
    assert chosen.splits == {"train": [], "val": ["z"]} and chosen.problems == []


def test_tags_without_a_class_list_stops_at_it(tmp_path):
    root = _tags_root(tmp_path / "t", "tags.csv", "image,tags\na.jpg,owl\n", classes=None)
    found = scan_tags(root, DataParams(layout="tags", root=str(root)))
    assert found.problems == [f"{root / 'classes.txt'}: no class list; write the class names there, one per line, "
                              f"or set data.classes"]
    assert found.classes.names == ("unknown",) and found.splits == {} and found.sources == []
    gone = scan_tags(tmp_path / "none", DataParams(layout="tags", root=str(tmp_path / "none")))
    assert gone.problems == [f"{tmp_path / 'none'}: data root not found (params data.root)"]


def test_coco_a_bad_train_file_does_not_hide_the_val_file(tmp_path):
    val = {"categories": CATS, "images": [{"id": 1, "file_name": "v.jpg", "height": 2, "width": 2}], "annotations": []}
    root = _coco_root(tmp_path / "coco", {"va": val})
    data = _data(root, layout="coco", train_split="tr", val_split="va")
    train_file = root / "annotations" / "instances_tr.json"
    found = scan_coco(root, data)
    assert found.problems == [f"{train_file}: instances JSON of split 'tr' not found (params data.train_split)"]
    assert found.splits == {"val": ["v"]} and found.classes.names == ("dog", "cat", "owl")
    train_file.write_text("{oops")
    found = scan_coco(root, data)
    assert len(found.problems) == 1 and found.problems[0].startswith(f"{train_file}: not readable JSON (")
    assert found.splits == {"val": ["v"]} and found.sources == [root / "annotations" / "instances_va.json"]


def test_long_lists_in_problems_name_the_first_ten(tmp_path):
    ids = [f"i{n:02d}" for n in range(11)]
    images = [{"id": n, "file_name": f"{i}.jpg", "height": 2, "width": 2} for n, i in enumerate(ids)]
    train = {"categories": CATS, "images": images + images,
             "annotations": [{"id": n, "image_id": 100 + n, "category_id": 3, "segmentation": []} for n in range(11)]}
    val = {"categories": CATS, "images": images, "annotations": []}
    root = _coco_root(tmp_path / "coco", {"tr": train, "va": val})
    found = scan_coco(root, _data(root, layout="coco", train_split="tr", val_split="va"))
    path = root / "annotations" / "instances_tr.json"
    assert found.problems == [
        f"{path}: annotations refer to image ids {list(range(100, 110))} that the file does not list",
        f"{path}: images listed twice: {ids[:10]}",
        f"{root}/annotations: 11 image(s) in both 'tr' and 'va': {ids[:10]}",
    ]
    voc = _voc_root(tmp_path / "voc", {"train": ids + ids, "sc": [f"s{n:02d}" for n in range(11)], "val": ids})
    lists = voc / "ImageSets" / "Segmentation"
    assert scan_voc(voc, _data(voc, score_split="sc")).problems == [
        f"{lists / 'train.txt'}: ids listed twice: {ids[:10]}",
        f"{lists / 'sc.txt'}: 11 score id(s) not in the train split 'train': {[f's{n:02d}' for n in range(10)]}",
        f"{voc}/ImageSets/Segmentation: 11 id(s) in both 'train' and 'val', which must not overlap: {ids[:10]}",
    ]


def test_scan_takes_an_explicit_root_and_passes_the_roles_to_every_layout(tmp_path):
    voc = _voc_root(tmp_path / "voc", {"train": ["a"], "val": ["b"]})
    assert scan(_data(tmp_path / "elsewhere"), voc).splits == {"train": ["a"], "val": ["b"]}
    val = {"categories": CATS, "images": [{"id": 1, "file_name": "v.jpg", "height": 2, "width": 2}], "annotations": []}
    coco = _coco_root(tmp_path / "coco", {"tr": dict(val), "va": val})
    assert scan(_data(coco, layout="coco", train_split="tr", val_split="va"), roles=("val",)).splits == {"val": ["v"]}
    tags = _tags_root(tmp_path / "t", "tags.csv", "image,tags,split\na.jpg,owl,train\nb.jpg,oak,val\n")
    assert scan(_data(tags, layout="tags"), roles=("val",)).splits == {"val": ["b"]}


def test_voc_labels_file_problems_and_roles_without_train(tmp_path):
    root = _voc_root(tmp_path / "voc", {"train": ["a"], "val": ["c", "d"]})
    np.save(root / "cls.npy", {"a": np.ones(20), "c": np.ones(3)}, allow_pickle=True)
    found = scan_voc(root, _data(root, labels="cls.npy"))
    assert found.problems == [f"{root / 'cls.npy'}: labels of 'c' have 3 entries, expected 20 (one per class)"]
    # val alone: its ids need no labels, and there is no train split to look them up in
    assert scan_voc(root, _data(root, labels="cls.npy"), ("val",)).problems == [
        f"{root / 'cls.npy'}: labels of 'c' have 3 entries, expected 20 (one per class)"]


def test_voc_a_score_split_without_its_train_split(tmp_path):
    root = _voc_root(tmp_path / "voc", {"sc": ["a", "b"], "val": ["c"]})
    lists = root / "ImageSets" / "Segmentation"
    found = scan_voc(root, _data(root, score_split="sc"))
    assert found.problems == [f"{lists / 'train.txt'}: split list 'train' not found (params data.train_split)",
                              f"{lists / 'sc.txt'}: 2 score id(s) not in the train split 'train': ['a', 'b']"]
