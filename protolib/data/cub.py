"""CUB-200-2011 in its native layout: the official split, bounding-box crops, and the 15 part
keypoints carried through every transform, so that ProtoEval can score a run's prototypes on it.

Layout read (paths relative to the dataset root)::

    images/<class folder>/<file>.jpg      images.txt                "<id> <class folder>/<file>"
    image_class_labels.txt "<id> <class 1..200>"           train_test_split.txt "<id> <1 train | 0 test>"
    bounding_boxes.txt     "<id> <x> <y> <width> <height>"  parts/parts.txt      "<part id> <name>"
    parts/part_locs.txt    "<id> <part id> <x> <y> <visible>"

Coordinates: CUB's x, y are read as pixel-centre coordinates (pixel column j is centred on x = j),
as is everything this module returns; a bounding box covers the pixel columns
``int(x) .. int(x) + int(width) - 1``, as in ProtoEval's reference code (hqhQAQ/EvalProtoPNet).
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from ..files import atomic_dir
from .features import Progress
from .folders import DataError, load_image

T = TypeVar("T")

REQUIRED = (
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "bounding_boxes.txt",
    "parts/parts.txt",
    "parts/part_locs.txt",
)


@dataclass(frozen=True)
class CubImage:
    """One annotated image: ``keypoints`` (P, 2) as (x, y) in the original image, ``visible`` (P,)."""

    id: int
    path: Path
    label: int  # 0-based class index (CUB's class id - 1)
    is_train: bool
    bbox: tuple[float, float, float, float]  # x, y, width, height
    keypoints: np.ndarray
    visible: np.ndarray

    @property
    def folder(self) -> str:
        return self.path.parent.name


@dataclass
class Cub:
    """The whole annotated dataset; ``class_folders[label]`` names each class's image folder."""

    root: Path
    images: list[CubImage]
    class_folders: list[str]
    part_names: list[str]

    @property
    def class_names(self) -> list[str]:
        """Readable names: '001.Black_footed_Albatross' -> 'Black footed Albatross'."""
        return [folder.split(".", 1)[-1].replace("_", " ") for folder in self.class_folders]

    def split(self, train: bool) -> list[CubImage]:
        """The official train (True) or test (False) images."""
        return [image for image in self.images if image.is_train == train]


def _rows(root: Path, name: str, columns: int) -> list[list[str]]:
    """The whitespace-separated rows of one annotation file (the last column may contain spaces)."""
    path = root / name
    if not path.is_file():
        raise DataError(f"{path} is missing: a CUB-200-2011 folder needs {', '.join(REQUIRED)}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=columns - 1)
            if len(parts) != columns:
                raise DataError(f"{path}:{number}: expected {columns} fields, got {line.strip()!r}")
            rows.append(parts)
    return rows


def _by_id(root: Path, name: str, columns: int, convert: Callable[[list[str]], T]) -> dict[int, T]:
    path, table = root / name, {}
    for row in _rows(root, name, columns):
        try:
            table[int(row[0])] = convert(row[1:])
        except ValueError as exc:
            raise DataError(f"{path}: bad row {' '.join(row)!r} ({exc})") from exc
    return table


def read_cub(root: str | Path) -> Cub:
    """Read the annotations (images are opened only when used); inconsistent files are a DataError."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} does not exist (expected the CUB_200_2011 folder)")
    paths = _by_id(root, "images.txt", 2, lambda r: r[0].strip())
    labels = _by_id(root, "image_class_labels.txt", 2, lambda r: int(r[0]) - 1)
    train = _by_id(root, "train_test_split.txt", 2, lambda r: bool(int(r[0])))
    boxes = _by_id(root, "bounding_boxes.txt", 5, lambda r: (float(r[0]), float(r[1]), float(r[2]), float(r[3])))
    part_rows = _rows(root, "parts/parts.txt", 2)
    try:
        part_ids = [int(r[0]) for r in part_rows]
    except ValueError as exc:
        raise DataError(f"{root / 'parts/parts.txt'}: part ids must be integers ({exc})") from exc
    if part_ids != list(range(1, len(part_ids) + 1)):
        raise DataError(f"{root / 'parts/parts.txt'}: part ids must run 1..{len(part_ids)} in order")
    P = len(part_ids)
    keypoints = {i: np.full((P, 2), np.nan) for i in paths}
    visible = {i: np.zeros(P, bool) for i in paths}
    locs = root / "parts/part_locs.txt"
    for row in _rows(root, "parts/part_locs.txt", 5):
        try:
            image_id, part, x, y, seen = int(row[0]), int(row[1]), float(row[2]), float(row[3]), int(row[4])
        except ValueError as exc:
            raise DataError(f"{locs}: bad row {' '.join(row)!r} ({exc})") from exc
        if image_id not in keypoints or not 1 <= part <= P:
            raise DataError(f"{locs}: image {image_id} or part {part} is not in images.txt / parts.txt")
        if seen == 1:  # CUB writes 0 0 for parts that are not visible: they have no location
            keypoints[image_id][part - 1] = x, y
            visible[image_id][part - 1] = True
    for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", train), ("bounding_boxes.txt", boxes)):
        missing = sorted(set(paths) - set(table))
        if missing:
            raise DataError(f"{root / name} has no row for image id {missing[0]} ({len(missing)} missing)")
    images = [
        CubImage(i, root / "images" / paths[i], labels[i], train[i], boxes[i], keypoints[i], visible[i]) for i in sorted(paths)
    ]
    folders: dict[int, str] = {}
    for image in images:
        if folders.setdefault(image.label, image.folder) != image.folder:
            raise DataError(
                f"{root / 'image_class_labels.txt'}: class {image.label + 1} spans folders "
                f"{folders[image.label]} and {image.folder}"
            )
    if sorted(folders) != list(range(len(folders))):
        raise DataError(f"{root / 'image_class_labels.txt'}: class ids must run 1..{len(folders)}")
    return Cub(root, images, [folders[c] for c in range(len(folders))], [r[1].strip() for r in part_rows])


# -- transforms that carry the keypoints ---------------------------------------------------------
def crop_box(bbox: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """The pixel box (left, top, right, bottom), right/bottom exclusive, clipped to the image."""
    x, y, w, h = bbox
    left, top = min(max(int(x), 0), width - 1), min(max(int(y), 0), height - 1)
    return left, top, max(left + 1, min(int(x) + int(w), width)), max(top + 1, min(int(y) + int(h), height))


def map_keypoints(keypoints: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    """Pixel-centre keypoints of the image -> of the crop ``box`` resized to ``size`` (width, height).

    Resizing maps pixel-centre x to (x + 0.5) * scale - 0.5 (half-pixel centres, as PIL and torch use).
    """
    left, top, right, bottom = box
    scale = np.array([size[0] / (right - left), size[1] / (bottom - top)])
    return (np.asarray(keypoints, float) - [left, top] + 0.5) * scale - 0.5


def load_example(image: CubImage, size: int | None = None, crop: bool = True) -> tuple[Image.Image, np.ndarray]:
    """The image cropped to its bounding box (``crop``) and resized to ``size`` x ``size`` (None: no resize),
    with its keypoints in the returned image's pixel-centre coordinates. Visibility is the annotation's."""
    picture = load_image(image.path)
    box = crop_box(image.bbox, *picture.size) if crop else (0, 0, *picture.size)
    picture = picture.crop(box)
    out_size = (size, size) if size else picture.size
    if size:
        picture = picture.resize(out_size, Image.Resampling.BILINEAR)
    return picture, map_keypoints(image.keypoints, box, out_size)


# -- the pipeline's view: an image folder ---------------------------------------------------------
def export_image_folder(
    root: str | Path,
    out: str | Path,
    crop: bool = True,
    classes: list[str] | None = None,
    images_per_class: int | None = None,
    class_map: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write CUB as the image folder the pipeline reads: ``out/train/<class folder>/`` (official train
    split) and ``out/val/<class folder>/`` (the official *test* split), cropped to the bounding boxes
    when ``crop``, plus ``out/keypoints.csv`` (split, file, part, x, y, visible) in the written images'
    coordinates.

    ``class_map`` also writes ``out/classes.csv`` mapping the folders to CUB's class order (0..199): only
    for a checkpoint fine-tuned on CUB's 200 classes in that order. Probes map by folder name and need none.
    ``classes`` selects class folders; ``images_per_class`` keeps the first images of each class and split.
    """
    cub, out = read_cub(root), Path(out)
    wanted = set(classes or cub.class_folders)
    unknown = wanted - set(cub.class_folders)
    if unknown:
        raise DataError(f"unknown CUB classes: {', '.join(sorted(unknown))}")
    chosen = []
    counts: dict[tuple[bool, str], int] = {}
    for image in cub.images:
        key = (image.is_train, image.folder)
        if image.folder in wanted and (images_per_class is None or counts.get(key, 0) < images_per_class):
            counts[key] = counts.get(key, 0) + 1
            chosen.append(image)
    rows = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for n, image in enumerate(chosen, 1):
            rel = Path("train" if image.is_train else "val") / image.folder / image.path.name
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if crop:
                picture, keypoints = load_example(image, crop=True)
                picture.save(tmp / rel, quality=95)
            else:
                shutil.copyfile(image.path, tmp / rel)
                keypoints = image.keypoints
            rows += [
                (rel.parts[0], "/".join(rel.parts[1:]), p + 1, *np.round(keypoints[p], 3), int(image.visible[p]))
                for p in range(len(keypoints))
            ]
            if progress:
                progress("export", n, len(chosen))
        with open(tmp / "keypoints.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("split", "file", "part", "x", "y", "visible"))
            writer.writerows(rows)
        if class_map:
            with open(tmp / "classes.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(("wnid", "imagenet_index", "name"))
                writer.writerows(zip(cub.class_folders, range(len(cub.class_folders)), cub.class_names, strict=True))
    return out
