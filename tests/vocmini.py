"""Paths into a VOC-layout folder (voc-mini, or a synthetic one) for tests that read files directly."""
from pathlib import Path

from textwsss.data.classes import VOC
from textwsss.data.images import read_image, read_mask  # noqa: F401  (re-exported for the tests)
from textwsss.data.layouts.voc import read_split_file, split_file

CLASS_NAMES = VOC.names
PROMPTS = VOC.prompts
NUM_CLASSES = VOC.num_classes


def image_path(root, image_id: str) -> Path:
    return Path(root) / "JPEGImages" / f"{image_id}.jpg"


def mask_path(root, image_id: str) -> Path:
    return Path(root) / "SegmentationClass" / f"{image_id}.png"


def read_split(root, split: str) -> list[str]:
    return read_split_file(split_file(Path(root), split))


def labels_of_mask(mask) -> list[int]:
    return VOC.labels_of_mask(mask)


def readable(name: str) -> str:
    return VOC.prompts[VOC.index(name)]


def prepared(root, out, **data):
    """The PreparedDataset of the dataset at `root` (params `data` keys as keywords), prepared into `out`."""
    from textwsss.data.prepared import read_prepared
    from textwsss.params import DataParams
    from textwsss.pipeline.prepare import prepare_dataset

    params = DataParams(root=str(root), **data)
    prepare_dataset(params, Path(out))
    return read_prepared(Path(out), params.root_path())
