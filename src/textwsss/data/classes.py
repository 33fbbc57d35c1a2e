"""Class lists: the names a dataset's labels and masks use, the names its text prompts use, and the colours.

A mask holds label k + 1 for object class k, 0 for background and 255 for pixels to ignore, whatever the data
set; only the class list differs. It travels with every prepared dataset and every checkpoint, so prompts, model
heads, metrics, palettes and the CLI all read the same list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

BACKGROUND = "background"
IGNORE = 255
#: Label values are uint8 with 0 for background and 255 for ignore: at most 254 object classes.
MAX_CLASSES = 254

VOC_NAMES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
#: VOC spells three classes as one word; prompts want the words apart.
VOC_PROMPTS: dict[str, str] = {"diningtable": "dining table", "pottedplant": "potted plant", "tvmonitor": "tv monitor"}

#: The 80 MS COCO object categories, in the order of their category ids (1..90 with gaps), i.e. the usual
#: contiguous label order 1..80 of pre-converted COCO label PNGs.
COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

PRESETS: dict[str, tuple[tuple[str, ...], Mapping[str, str]]] = {
    "voc": (VOC_NAMES, VOC_PROMPTS),
    "coco": (COCO_NAMES, {}),
}


def label_palette() -> np.ndarray:
    """The VOC colour map as a (256, 3) uint8 array: bit-interleaved colours, distinct for every label value,
    so it serves any class list (PASCAL's own colours for the first 21 labels)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        r = g = b = 0
        c = label
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[label] = (r, g, b)
    return palette


PALETTE = label_palette()


@dataclass(frozen=True)
class ClassList:
    """The object classes of a dataset (background excluded) and the name each one gets in a text prompt.

    names: as the labels and the metrics spell them (e.g. 'diningtable'); prompts: the same classes as words
    for a prompt (e.g. 'dining table'), same order.
    """

    names: tuple[str, ...]
    prompts: tuple[str, ...]

    def __post_init__(self) -> None:
        names, prompts = tuple(self.names), tuple(self.prompts)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "prompts", prompts)
        if not names:
            raise ValueError("class list: expected at least one class name")
        if len(names) > MAX_CLASSES:
            raise ValueError(f"class list: at most {MAX_CLASSES} classes fit uint8 labels, got {len(names)}")
        if len(prompts) != len(names):
            raise ValueError(f"class list: {len(prompts)} prompt names for {len(names)} classes")
        bad = [n for n in names + prompts if not isinstance(n, str) or not n.strip()]
        if bad:
            raise ValueError(f"class list: class and prompt names must be non-empty strings, got {bad[:5]}")
        if BACKGROUND in names:
            raise ValueError(f"class list: '{BACKGROUND}' is label 0 of every mask, not an object class")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"class list: classes named twice: {dupes}")

    @classmethod
    def of(cls, names: Sequence[str], prompts: Mapping[str, str] | None = None) -> "ClassList":
        """From class names and optional prompt names per class (others: the name, '_' read as a space)."""
        prompts = dict(prompts or {})
        unknown = sorted(set(prompts) - set(names))
        if unknown:
            raise ValueError(f"prompt names given for unknown classes {unknown}; the classes are {list(names)}")
        return cls(tuple(names), tuple(prompts.get(n, n.replace("_", " ")) for n in names))

    @classmethod
    def preset(cls, name: str, prompts: Mapping[str, str] | None = None) -> "ClassList":
        if name not in PRESETS:
            raise ValueError(f"class list preset: expected one of {sorted(PRESETS)}, got {name!r}")
        names, own = PRESETS[name]
        return cls.of(names, {**own, **(prompts or {})})

    @classmethod
    def from_json(cls, data: Mapping) -> "ClassList":
        return cls(tuple(data["names"]), tuple(data["prompts"]))

    def to_json(self) -> dict:
        return {"names": list(self.names), "prompts": list(self.prompts)}

    # ---- the derived views every stage uses -------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Object classes (the CAM network's outputs)."""
        return len(self.names)

    @property
    def num_labels(self) -> int:
        """Mask labels: background plus the object classes (a segmentation network's outputs)."""
        return len(self.names) + 1

    @property
    def label_names(self) -> tuple[str, ...]:
        return (BACKGROUND, *self.names)

    def index(self, name: str) -> int:
        """0-based class index of a class given by its name or its prompt name (case-insensitive)."""
        key = name.strip().lower()
        for i, (n, p) in enumerate(zip(self.names, self.prompts)):
            if key in (n.lower(), p.lower()):
                return i
        raise KeyError(name)

    def labels_of_mask(self, mask: np.ndarray) -> list[int]:
        """Image-level label: 0-based indices of the object classes present in a mask."""
        values = np.unique(np.asarray(mask))
        return [int(v) - 1 for v in values if 1 <= v <= self.num_classes]

    def valid_mask_values(self) -> set[int]:
        return set(range(self.num_labels)) | {IGNORE}


VOC = ClassList.preset("voc")
COCO = ClassList.preset("coco")
