import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from textwsss.data.dataset import DataError
from textwsss.data.prepared import read_prepared
from textwsss.io import save_label_png
from textwsss.params import DataParams
from textwsss.pipeline.prepare import prepare_dataset
from vocmini import read_mask, read_split

IDS = ["2007_000039", "2007_000250", "2007_000504", "2007_000033", "2007_000663"]


@pytest.fixture
def small_root(voc_mini, tmp_path) -> Path:
    """A VOC root with 3 train and 2 val ids copied from voc-mini, to break on purpose."""
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for i in IDS:
        shutil.copy(voc_mini / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
        shutil.copy(voc_mini / "SegmentationClass" / f"{i}.png", root / "SegmentationClass")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(IDS[:3]) + "\n")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(IDS[3:]) + "\n")
    return root


def _prepare(root, out):
    return prepare_dataset(DataParams(root=str(root)), out)


def test_voc_mini_counts_and_labels(voc_data, voc_mini):
    assert len(voc_data.ids("train")) == 148 and len(voc_data.ids("val")) == 81
    assert voc_data.ids("score") == voc_data.ids("train")  # every train image has a mask
    assert voc_data.classes.names[10] == "diningtable" and voc_data.classes.prompts[10] == "dining table"
    for image_id in read_split(voc_mini, "train")[:20]:
        mask = read_mask(voc_mini / "SegmentationClass" / f"{image_id}.png")
        expected = sorted(int(v) - 1 for v in np.unique(mask) if 0 < v < 255)
        assert voc_data.labels[image_id] == expected


def test_write_and_read_prepared(small_root, tmp_path):
    content = _prepare(small_root, tmp_path / "prepared")
    data = read_prepared(tmp_path / "prepared", small_root)
    assert data.ids("train") == IDS[:3] and data.ids("val") == IDS[3:]
    assert data.labels["2007_000250"] == [4, 10]  # bottle, diningtable (sources.tsv: 5, 11)
    assert data.image_path("2007_000250") == small_root / "JPEGImages" / "2007_000250.jpg"
    # the manifest holds the content hash of every file, relative to the root: it changes with the data only
    assert set(content["manifest"]) >= {"JPEGImages/2007_000250.jpg", "SegmentationClass/2007_000250.png",
                                        "ImageSets/Segmentation/train.txt"}
    before = (tmp_path / "prepared" / "dataset.json").read_bytes()
    moved = tmp_path / "elsewhere"
    shutil.copytree(small_root, moved)
    _prepare(moved, tmp_path / "prepared")
    assert (tmp_path / "prepared" / "dataset.json").read_bytes() == before  # location does not matter
    path = moved / "SegmentationClass" / "2007_000039.png"
    mask = read_mask(path)
    mask[0, 0] = 0 if mask[0, 0] else 1
    save_label_png(path, mask)
    _prepare(moved, tmp_path / "prepared")
    assert (tmp_path / "prepared" / "dataset.json").read_bytes() != before  # content does


def _problems(root) -> str:
    with pytest.raises(DataError) as err:
        _prepare(root, root.parent / "prepared")
    return str(err.value)


def test_corrupt_jpeg_is_named(small_root):
    path = small_root / "JPEGImages" / "2007_000250.jpg"
    path.write_bytes(path.read_bytes()[:2000])  # truncated
    message = _problems(small_root)
    assert "2007_000250.jpg" in message and "truncated" in message


def test_size_mismatch_is_named(small_root):
    path = small_root / "SegmentationClass" / "2007_000504.png"
    mask = read_mask(path)
    save_label_png(path, mask[:-10])
    message = _problems(small_root)
    assert "2007_000504.png" in message and "differs from image size" in message


def test_stray_mask_value_is_named(small_root):
    path = small_root / "SegmentationClass" / "2007_000039.png"
    mask = read_mask(path)
    mask[0, 0] = 37
    save_label_png(path, mask)
    message = _problems(small_root)
    assert "2007_000039.png" in message and "[37]" in message


def test_missing_file_is_named(small_root):
    (small_root / "JPEGImages" / "2007_000033.jpg").unlink()
    message = _problems(small_root)
    assert "2007_000033.jpg: missing image" in message


def test_overlapping_splits(small_root):
    (small_root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n2007_000039\n")
    message = _problems(small_root)
    assert "both 'train' and 'val'" in message and "2007_000039" in message


def test_all_problems_at_once_and_nothing_written(small_root, tmp_path):
    (small_root / "JPEGImages" / "2007_000033.jpg").unlink()
    (small_root / "SegmentationClass" / "2007_000663.png").unlink()
    message = _problems(small_root)
    assert "2 problem(s)" in message
    assert "2007_000033.jpg" in message and "2007_000663.png" in message
    assert not (tmp_path / "prepared").exists()
