"""Datasets: class lists, the folder layouts the pipeline reads (data/layouts/), their checks, the prepared view
every stage reads, and the torch datasets and augmentation of the training stages."""
from .classes import BACKGROUND, COCO, IGNORE, PALETTE, VOC, ClassList
from .dataset import DataError, Scan
from .images import read_image, read_mask
from .prepared import PreparedDataset, read_prepared

__all__ = ["BACKGROUND", "COCO", "IGNORE", "PALETTE", "VOC", "ClassList", "DataError", "Scan", "read_image",
           "read_mask", "PreparedDataset", "read_prepared"]
