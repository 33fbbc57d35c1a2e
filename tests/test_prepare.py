import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from textwsss.io import save_label_png
from textwsss.prepare import DataError, read_prepared, validate_root, write_prepared
from textwsss.voc import labels_of_mask, read_mask, read_split

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


def _validate(root):
    return validate_root(root, ["train", "val"], disjoint=[("train", "val")])


def test_voc_mini_counts_and_labels(voc_mini):
    data = _validate(voc_mini)
    assert len(data.splits["train"]) == 148 and len(data.splits["val"]) == 81
    for image_id in read_split(voc_mini, "train")[:20]:
        mask = read_mask(voc_mini / "SegmentationClass" / f"{image_id}.png")
        expected = sorted(int(v) - 1 for v in np.unique(mask) if 0 < v < 255)
        assert data.labels[image_id] == expected


def test_write_and_read_prepared(small_root, tmp_path):
    data = _validate(small_root)
    write_prepared(tmp_path / "prepared", data)
    ids, labels = read_prepared(tmp_path / "prepared", "train")
    assert ids == IDS[:3]
    assert labels["2007_000250"] == [4, 10]  # bottle, diningtable (sources.tsv: 5, 11)


def _problems(root) -> str:
    with pytest.raises(DataError) as err:
        _validate(root)
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
