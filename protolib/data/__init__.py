"""Data layer: image folders and their labels, uploads, the feature cache, CUB, generated parts data.

The names most callers need come from ``folders``; the other modules are imported by name
(``protolib.data.features``, ``protolib.data.uploads``...), so importing ``protolib.data`` stays light.
"""

from .folders import (
    HELDOUT_PERCENT,
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    SPLITS,
    BadImage,
    ClassFolder,
    DataError,
    ImageSet,
    NoMatchingClasses,
    Problem,
    available_splits,
    class_folders,
    has_splits,
    image_files,
    load_image,
    read_class_map,
    scan_split,
    split_dir,
    split_images,
)

__all__ = [
    "HELDOUT_PERCENT",
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "SPLITS",
    "BadImage",
    "ClassFolder",
    "DataError",
    "ImageSet",
    "NoMatchingClasses",
    "Problem",
    "available_splits",
    "class_folders",
    "has_splits",
    "image_files",
    "load_image",
    "read_class_map",
    "scan_split",
    "split_dir",
    "split_images",
]
