"""Every dataset layout: its bad inputs named in one report before any work, and the whole DAG run on a tiny
dataset of voc-mini images in that layout (the stages in DAG order, in this process, with a tiny model)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from layout_builders import TAG_CLASSES, coco_root, tags_root, voc_aug_root
from textwsss.data.dataset import DataError
from textwsss.data.prepared import read_prepared
from textwsss.io import save_label_png
from textwsss.models.checkpoints import load_model
from textwsss.params import DataParams, parse_params
from textwsss.pipeline.prepare import prepare_dataset
from textwsss.pipeline.workspace import Workspace
from vocmini import read_mask

STAGES = ["prepare", "train_cam_baseline", "train_cam", "make_cam", "eval_cam", "pseudo_labels", "train_seg", "eval_seg", "zeroshot", "tas"]
TINY = {
    "train_cam_baseline": {"epochs": 1, "batch_size": 4, "resize_long": [64, 64], "crop_size": 64},
    "train_cam": {"epochs": 1, "batch_size": 4, "resize_long": [64, 64], "crop_size": 64, "matcher_batch": 8},
    "make_cam": {"scales": [1.0], "max_side": 64},
    "eval_cam": {"figures": 1},
    "pseudo_labels": {"workers": 1, "crf": {"iterations": 1}},
    "seg": {"aspp_channels": 16, "decoder_channels": 16},
    "train_seg": {"epochs": 1, "batch_size": 4, "crop_size": 64, "scale_range": [0.15, 0.15]},
    "eval_seg": {"figures": 1, "max_side": 64, "class_gate": "matcher"},
    "zeroshot": {"max_side": 64},
    "tas": {"max_masks": 4, "max_side": 64, "captioner": False, "use_seg_model": True},
}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def run_dag(tmp_path, data: dict, extra: dict | None = None) -> Workspace:
    import importlib

    params = parse_params(_merge(_merge(TINY, {"data": data}), extra or {}))
    ws = Workspace(tmp_path / "project")
    torch.manual_seed(0)
    for stage in STAGES:
        importlib.import_module(f"textwsss.pipeline.{stage}").run(params, ws)
    return ws


def _metrics(ws: Workspace, name: str) -> dict:
    return json.loads((ws.metrics / f"{name}.json").read_text())


def _problems(data: DataParams, tmp_path) -> str:
    with pytest.raises(DataError) as err:
        prepare_dataset(data, tmp_path / "prepared")
    assert not (tmp_path / "prepared").exists()  # nothing written
    return str(err.value)


# ---- voc_aug -------------------------------------------------------------------------------------------------
def _voc_aug(root) -> DataParams:
    return DataParams(layout="voc_aug", root=str(root), train_split="train_aug", score_split="train")


def test_voc_aug_prepares_train_aug_and_scores_on_train(voc_mini, tmp_path):
    root = voc_aug_root(voc_mini, tmp_path / "voc_aug")
    prepare_dataset(_voc_aug(root), tmp_path / "prepared")
    data = read_prepared(tmp_path / "prepared", root)
    assert len(data.ids("train")) == 8 and len(data.ids("score")) == 4 and len(data.ids("val")) == 4
    assert data.ids("score") == data.ids("train")[:4]
    assert data.mask_path(data.ids("train")[0]).parent.name == "SegmentationClassAug"


def test_voc_aug_image_level_labels_from_cls_labels_npy(voc_mini, tmp_path):
    root = voc_aug_root(voc_mini, tmp_path / "voc_aug")
    prepare_dataset(_voc_aug(root), tmp_path / "from_masks")
    expected = read_prepared(tmp_path / "from_masks", root).labels
    # IRN's file: integer ids, 20-vectors; the masks of two train ids removed (labels need no mask)
    table = {int(i.replace("_", "")): np.isin(np.arange(20), k).astype(np.float32) for i, k in expected.items()}
    np.save(root / "cls_labels.npy", table)
    train = [line.split()[0].split("/")[-1][:-4] for line in
             (root / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().splitlines()]
    for i in train[-2:]:
        (root / "SegmentationClassAug" / f"{i}.png").unlink()
    data = DataParams(layout="voc_aug", root=str(root), train_split="train_aug", score_split="train",
                      labels="cls_labels.npy")
    prepare_dataset(data, tmp_path / "from_file")
    got = read_prepared(tmp_path / "from_file", root)
    assert got.labels == expected
    assert not got.has_mask(train[-1]) and got.has_mask(train[0])


def test_voc_aug_bad_inputs_in_one_report(voc_mini, tmp_path):
    root = voc_aug_root(voc_mini, tmp_path / "voc_aug")
    lists = root / "ImageSets" / "Segmentation"
    train = [line.split()[0].split("/")[-1][:-4] for line in (lists / "train_aug.txt").read_text().splitlines()]
    # unreadable image, mask of the wrong size, a value outside 0..20/255, an id twice, an id without files
    jpg = root / "JPEGImages" / f"{train[0]}.jpg"
    jpg.write_bytes(jpg.read_bytes()[:1500])
    small = read_mask(root / "SegmentationClassAug" / f"{train[1]}.png")[:-7]
    save_label_png(root / "SegmentationClassAug" / f"{train[1]}.png", small)
    stray = read_mask(root / "SegmentationClassAug" / f"{train[2]}.png")
    stray[0, 0] = 42
    save_label_png(root / "SegmentationClassAug" / f"{train[2]}.png", stray)
    with open(lists / "train_aug.txt", "a") as f:
        f.write(f"{train[3]}\n2011_999999\n")
    message = _problems(_voc_aug(root), tmp_path)
    assert f"{train[0]}.jpg: unreadable or truncated image" in message
    assert f"{train[1]}.png: mask size" in message and "differs from image size" in message
    assert f"{train[2]}.png: mask values [42]" in message
    assert "ids listed twice" in message and train[3] in message
    assert "2011_999999.jpg: missing image" in message
    assert "5 problem(s)" in message or "6 problem(s)" in message  # the missing id also lacks its mask


def test_voc_aug_whole_dag_on_train_aug(voc_mini, tmp_path):
    import os

    root = voc_aug_root(voc_mini, tmp_path / "voc_aug")
    old = os.umask(0o022)
    try:
        ws = run_dag(tmp_path, {"layout": "voc_aug", "root": str(root), "train_split": "train_aug",
                                "score_split": "train"})
    finally:
        os.umask(old)
    # every file the stages wrote has the mode the umask gives (0644), as open() would, not mkstemp's 0600
    written = [p for p in (tmp_path / "project").rglob("*") if p.is_file()]
    assert len(written) > 40 and {p.stat().st_mode & 0o777 for p in written} == {0o644}
    cam = _metrics(ws, "cam")
    assert cam["n_images"] == 4 and "aeroplane" in cam["per_class"] and cam["miou"] is not None
    assert _metrics(ws, "pseudo_labels")["n_images"] == 4
    assert len(list(ws.pseudo_labels.glob("*.png"))) == 8  # pseudo-labels of all train_aug images
    seg = _metrics(ws, "seg")
    assert seg["n_images"] == 4 and seg["ungated"]["miou"] is not None
    assert 0 < seg["class_gate"]["threshold"] < 1 and seg["class_gate"]["class_f1_val"] is not None


# ---- coco ----------------------------------------------------------------------------------------------------
def test_coco_masks_are_rasterised_from_the_polygons(voc_mini, tmp_path):
    root = coco_root(voc_mini, tmp_path / "coco")
    data = DataParams(layout="coco", root=str(root), train_split="train2014", val_split="val2014")
    prepare_dataset(data, tmp_path / "prepared")
    ds = read_prepared(tmp_path / "prepared", root)
    assert ds.classes.names[0] == "person" and ds.classes.num_classes == 80
    first = ds.ids("train")[0]
    assert first.startswith("COCO_train2014_") and ds.mask_path(first).is_file()
    # the traced polygons give back the voc-mini mask up to its outline: the same classes, most pixels equal
    from layout_builders import VOC_TO_COCO, pick
    from textwsss.data.classes import VOC_NAMES

    voc_id = pick(voc_mini, "train", 1)[0]  # the builder copies voc-mini's train ids in order
    original = read_mask(voc_mini / "SegmentationClass" / f"{voc_id}.png")
    remap = np.zeros(256, np.uint8)
    for k, name in enumerate(VOC_NAMES):
        remap[k + 1] = ds.classes.names.index(VOC_TO_COCO.get(name, name)) + 1
    expected = remap[original]
    got = ds.read_mask(first)
    scored = original != 255
    assert (got[scored] == expected[scored]).mean() > 0.97
    assert ds.labels[first] == sorted({int(v) - 1 for v in np.unique(expected[scored]) if v})


def test_coco_bad_inputs_in_one_report(voc_mini, tmp_path):
    root = coco_root(voc_mini, tmp_path / "coco")
    path = root / "annotations" / "instances_train2014.json"
    content = json.loads(path.read_text())
    content["annotations"][0]["category_id"] = 999  # unknown category
    content["images"].append(dict(content["images"][1]))  # an image listed twice
    content["images"].append({"id": 5555, "file_name": "COCO_train2014_000000005555.jpg", "height": 10,
                              "width": 10})  # listed, but no file
    content["annotations"].append({**content["annotations"][1], "id": 77777, "image_id": 424242})
    path.write_text(json.dumps(content))
    jpg = root / "train2014" / content["images"][2]["file_name"]
    jpg.write_bytes(jpg.read_bytes()[:1200])
    message = _problems(DataParams(layout="coco", root=str(root), train_split="train2014", val_split="val2014"),
                        tmp_path)
    assert "unknown category_id 999" in message
    assert "images listed twice" in message and content["images"][1]["file_name"][:-4] in message
    assert "COCO_train2014_000000005555.jpg: missing image" in message
    assert "image ids [424242]" in message
    assert f"{content['images'][2]['file_name']}: unreadable or truncated image" in message


def test_coco_pre_converted_masks_are_checked(voc_mini, tmp_path):
    root = coco_root(voc_mini, tmp_path / "coco")
    data = DataParams(layout="coco", root=str(root), train_split="train2014", val_split="val2014")
    prepare_dataset(data, tmp_path / "rasterised")
    ds = read_prepared(tmp_path / "rasterised", root)
    (root / "labels").mkdir()
    for i in ds.ids("train") + ds.ids("val"):
        shutil.copy(ds.mask_path(i), root / "labels" / f"{i}.png")
    bad = ds.ids("val")[0]
    mask = read_mask(root / "labels" / f"{bad}.png")
    mask[:3, :3] = 81  # one past the 80 classes
    save_label_png(root / "labels" / f"{bad}.png", mask[:, :-2])
    message = _problems(DataParams(layout="coco", root=str(root), train_split="train2014", val_split="val2014",
                                   masks="labels"), tmp_path)
    assert f"{bad}.png: mask values [81]" in message and f"{bad}.png: mask size" in message


def test_coco_whole_dag_names_coco_classes(voc_mini, tmp_path):
    root = coco_root(voc_mini, tmp_path / "coco")
    ws = run_dag(tmp_path, {"layout": "coco", "root": str(root), "train_split": "train2014",
                            "val_split": "val2014"})
    for name in ("cam", "pseudo_labels", "seg"):
        per_class = _metrics(ws, name)["per_class"]
        assert "airplane" in per_class and "aeroplane" not in per_class and len(per_class) == 81, name
    assert len(_metrics(ws, "seg")["ungated"]["per_class"]) == 81  # the class gate ran on COCO's classes
    model, _ = load_model(ws.model_dir("train_seg") / "model.pt")
    assert model.classes.num_classes == 80 and model.classes.names[62] == "tv"
    labels = json.loads((ws.plots / "seg_confusion.json").read_text())["labels"]
    assert labels[0] == "background" and labels[1] == "person" and len(labels) == 81


# ---- tags ----------------------------------------------------------------------------------------------------
def _tags(root, **kw) -> DataParams:
    return DataParams(layout="tags", root=str(root), **kw)


def test_tags_prepare_reads_own_classes_and_no_masks(voc_mini, tmp_path):
    root = tags_root(voc_mini, tmp_path / "tags")
    prepare_dataset(_tags(root), tmp_path / "prepared")
    ds = read_prepared(tmp_path / "prepared", root)
    assert ds.classes.names == tuple(TAG_CLASSES)
    assert len(ds.ids("train")) == 8 and len(ds.ids("val")) == 4 and ds.ids("score") == []
    assert all(ds.labels[i] for i in ds.ids("train"))
    assert ds.image_path(ds.ids("train")[0]).is_file() and "/" in ds.ids("train")[0]  # ids keep sub-folders


def test_tags_json_file_and_masks_for_some_images(voc_mini, tmp_path):
    root = tags_root(voc_mini, tmp_path / "tags")
    rows = (root / "tags.csv").read_text().splitlines()[1:]
    entries = [{"image": r.split(",")[0], "tags": r.split(",")[1].split(";"), "split": r.split(",")[2]}
               for r in rows]
    (root / "tags.json").write_text(json.dumps(entries))
    (root / "tags.csv").unlink()
    first = entries[0]["image"][:-4]
    h, w = np.asarray(Image.open(root / "images" / entries[0]["image"])).shape[:2]
    save_label_png(root / "masks" / f"{first}.png", np.zeros((h, w), np.uint8))
    prepare_dataset(_tags(root), tmp_path / "prepared")
    ds = read_prepared(tmp_path / "prepared", root)
    assert ds.with_masks(ds.ids("train")) == [first] and ds.ids("score") == [first]


def _tiny_tags_root(root, tags_file: str, content: str):
    """Three 8x8 images in images/, classes.txt with red_fox, owl and oak, and the given tags file."""
    (root / "images").mkdir(parents=True)
    for n, name in enumerate(["fox", "owl", "oak"]):
        Image.fromarray(np.full((8, 8, 3), 60 * n, np.uint8)).save(root / "images" / f"{name}.png")
    (root / "classes.txt").write_text("red_fox\nowl\noak\n")
    (root / tags_file).write_text(content)
    return root


@pytest.mark.parametrize("tags", ["owl|oak", "owl;oak", "oak | owl", "owl;oak|"])
def test_tags_csv_separates_tags_by_bar_or_semicolon(tmp_path, tags):
    root = _tiny_tags_root(tmp_path / "tags", "tags.csv",
                           f"image,tags\nfox.png,red fox\nowl.png,{tags}\noak.png,oak\n")
    prepare_dataset(_tags(root), tmp_path / "prepared")
    ds = read_prepared(tmp_path / "prepared", root)
    # class indices: red_fox 0 (its prompt 'red fox' names it too), owl 1, oak 2
    assert ds.ids("train") == ["fox", "owl", "oak"] and ds.ids("val") == []
    assert ds.labels == {"fox": [0], "owl": [1, 2], "oak": [2]}


def test_tags_json_as_a_mapping_from_image_to_tags(tmp_path):
    root = _tiny_tags_root(tmp_path / "tags", "tags.json",
                           json.dumps({"fox.png": ["red_fox", "oak"], "owl.png": ["owl"], "oak.png": []}))
    prepare_dataset(_tags(root), tmp_path / "prepared")  # found without data.labels: tags.csv is absent
    ds = read_prepared(tmp_path / "prepared", root)
    # the mapping form has no split: every image is a train image
    assert ds.ids("train") == ["fox", "owl", "oak"] and ds.ids("val") == []
    assert ds.labels == {"fox": [0, 2], "owl": [1], "oak": []}
    (root / "tags.json").write_text(json.dumps({"fox.png": "owl"}))
    message = _problems(_tags(root), tmp_path / "bad")
    assert "tags.json entry 0: expected {'image': ..., 'tags': [...]}" in message


def test_tags_bad_inputs_in_one_report(voc_mini, tmp_path):
    root = tags_root(voc_mini, tmp_path / "tags")
    lines = (root / "tags.csv").read_text().splitlines()
    image0 = lines[1].split(",")[0]
    lines.append(lines[1])  # listed twice
    lines.append("b/nowhere.jpg,canine,train")  # missing file
    lines.append(lines[2].split(",")[0].replace(".jpg", "_x.jpg") + ",lupine;canine,train")  # unknown class
    lines.append(lines[3].split(",")[0].replace(".jpg", "_y.jpg") + ",feline,test")  # unknown split
    (root / "tags.csv").write_text("\n".join(lines) + "\n")
    (root / "images" / image0).write_bytes((root / "images" / image0).read_bytes()[:1000])
    message = _problems(_tags(root), tmp_path)
    assert f"tags.csv:{len(lines) - 1}: tags ['lupine'] name no class" in message
    assert f"tags.csv:{len(lines) - 3}: image '{image0}' listed twice" in message
    assert "nowhere.jpg: missing image" in message
    assert "split 'test' is neither" in message
    assert f"{image0}: unreadable or truncated image" in message
    without = tmp_path / "no_classes"
    shutil.copytree(root, without)
    (without / "classes.txt").unlink()
    assert "classes.txt: no class list" in _problems(_tags(without), tmp_path)


def test_tags_whole_dag_without_masks(voc_mini, tmp_path, caplog):
    root = tags_root(voc_mini, tmp_path / "tags")
    # the offline stand-in knows none of the three names: mapped to names it knows through clims.synonyms
    extra = {"clims": {"synonyms": {k: [v] for k, v in TAG_CLASSES.items()}}}
    ws = run_dag(tmp_path, {"layout": "tags", "root": str(root)}, extra)
    for name in ("cam", "pseudo_labels", "seg", "zeroshot"):
        m = _metrics(ws, name)
        assert m["miou"] is None and "0 of the" in m["note"], name
    assert _metrics(ws, "tas")["n"] == 0
    assert len(list(ws.pseudo_labels.rglob("*.png"))) == 8  # the labels exist all the same
    model, _ = load_model(ws.model_dir("train_seg") / "model.pt")
    assert model.classes.names == tuple(TAG_CLASSES)
    assert "not scored" in caplog.text


def test_tags_unmapped_class_stops_train_cam_with_how_to_map_it(voc_mini, tmp_path):
    root = tags_root(voc_mini, tmp_path / "tags")
    with pytest.raises(ValueError) as err:
        run_dag(tmp_path, {"layout": "tags", "root": str(root)})
    message = str(err.value)
    assert "canine" in message and "guide.imagenet_classes" in message and "clims.synonyms" in message
