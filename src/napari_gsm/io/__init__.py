"""Landmark, image, dataset and model-file I/O (no napari, no Qt).

Coordinates in memory are float64 ``(v, 2)`` arrays in ``(x, y)`` order, 0-based: the
centre of the top-left pixel is ``(0, 0)``. Missing landmarks are NaN rows.
"""

from .atomic import atomic_write_bytes, atomic_write_text
from .dataset import (NAMES_FILE, Dataset, DatasetItem, add_to_dataset, load_dataset, read_names,
                      scan_annotated, write_names)
from .errors import ImageFileError, LandmarkFileError, ModelFileError
from .images import IMAGE_SUFFIXES, composite_alpha, read_image, to_grey, write_image
from .model_file import MODEL_FORMAT_VERSION, load_model_file, read_model_header, save_model_file
from .pts import format_pts, parse_pts, read_pts, write_pts
from .tps import TpsSpecimen, format_tps, parse_tps, read_tps, write_tps

__all__ = [
    "LandmarkFileError",
    "ImageFileError",
    "ModelFileError",
    "atomic_write_text",
    "atomic_write_bytes",
    "read_pts",
    "write_pts",
    "format_pts",
    "parse_pts",
    "TpsSpecimen",
    "read_tps",
    "write_tps",
    "format_tps",
    "parse_tps",
    "IMAGE_SUFFIXES",
    "read_image",
    "write_image",
    "to_grey",
    "composite_alpha",
    "Dataset",
    "DatasetItem",
    "load_dataset",
    "scan_annotated",
    "add_to_dataset",
    "read_names",
    "write_names",
    "NAMES_FILE",
    "MODEL_FORMAT_VERSION",
    "save_model_file",
    "load_model_file",
    "read_model_header",
]
