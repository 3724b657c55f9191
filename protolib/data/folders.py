"""Image folders: finding the images of each class, mapping folders to the model's labels, and
reading images so that odd or broken files are reported instead of crashing a run."""

from __future__ import annotations

import csv
import functools
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ..config import IMAGENET_CLASSES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_PIXELS = 80_000_000  # larger images are refused rather than decoded (decompression bombs)
#: longest side over shortest side: a thinner image is refused before it is decoded, because resizing its short
#: side to a model's input (about 256 px) would ask for ``256 * MAX_ASPECT`` px per row: a 20000x1 PNG of
#: 140 bytes asked for ~3 GB. Panoramas (4:1) and long scans (10:1) pass.
MAX_ASPECT = 16
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated JPEG is an error, not a grey half-image


class DataError(ValueError):
    """The data cannot be used; the message says why and where."""


class BadImage(DataError):
    """One file could not be read as an image."""


class NoMatchingClasses(DataError):
    """No class folder of a split names a class of the model (a linear probe can make them classes)."""


#: the reason given for a class folder that names no class of the model
UNKNOWN_CLASS_FOLDER = "class folder matches no class of the model; skipped"


@dataclass(frozen=True)
class Problem:
    """A file or folder that was skipped, and why (shown to the user, never thrown)."""

    path: str
    reason: str
    unknown_class: bool = False  # a class folder that names no class of the model (see NoMatchingClasses)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class ClassFolder:
    folder: str  # folder name on disk
    label: int  # index in the model's label space
    name: str  # readable name
    n_images: int | None = None  # how many images it holds, where counted (the app's class list)


@dataclass
class ImageSet:
    """The images of one split, per class, with everything that was skipped."""

    root: Path
    split: str
    classes: list[ClassFolder]
    images: dict[str, list[Path]]  # class folder -> sorted image paths
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(v) for v in self.images.values())


def load_image(path: str | Path) -> Image.Image:
    """Open any image as RGB: alpha is composited on white, grayscale/CMYK/palette converted."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                problem = size_problem(img.width, img.height)
                if problem:
                    raise BadImage(f"{path}: {problem}")
                img.load()
                if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                    rgba = img.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    return Image.alpha_composite(background, rgba).convert("RGB")
                if img.mode.startswith(("I", "F")):
                    return _to_8bit(img)
                return img.convert("RGB")
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, Warning) as exc:
        raise BadImage(f"{path}: not a readable image ({exc})") from exc


def size_problem(width: int, height: int) -> str | None:
    """Why an image of this size is refused (too many pixels, or too thin to resize safely), or None."""
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        return f"{width}x{height} pixels is too large (at most {MAX_PIXELS:,} pixels)"
    if max(width, height) > MAX_ASPECT * min(width, height):
        return f"{width}x{height} pixels is too thin (at most {MAX_ASPECT}:1 between its sides)"
    return None


def ascii_number(text: str) -> int | None:
    """``text`` as a label index when it is made of ASCII digits only (``"217"``), else None: ``"²"`` or ``"٣"``
    pass ``str.isdigit`` but are not indices (``int("²")`` fails, ``int("٣")`` is 3)."""
    return int(text) if text.isascii() and text.isdecimal() else None


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16- or 32-bit integer or a float image scaled to 8-bit RGB (PIL's own conversion clips every
    value above 255, so a 16-bit photo would come out pure white)."""
    values = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("F"):
        low, high = values.min(), values.max()
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    else:
        values = values / (65535.0 if values.max() <= 65535 else 4294967295.0)
    grey = np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def is_image_file(path: Path) -> bool:
    """A visible file whose suffix is an image format's (its content is checked when it is read)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def within(path: Path, root: str | Path) -> bool:
    """Whether ``path``, links followed at every depth, stays inside ``root`` (links followed too): a data
    folder is closed under links, so a link inside it never reaches another session's uploads."""
    try:
        return path.resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a loop of links
        return False


def image_files(folder: str | Path, root: str | Path | None = None) -> list[Path]:
    """The image files of one class folder, sorted by name: the images a run or a picker uses. A file whose
    links lead out of ``root`` (default: the folder itself) is left out."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if is_image_file(p) and within(p, root or folder))


# -- the two layouts: DIR/train|val/<class>/<images>, and DIR/<class>/<images> (torchvision's ImageFolder) ------
SPLITS = ("train", "val")
#: In a folder without train/ and val/, this share of each class's images is held out as val/, chosen by a
#: hash of the file's name: the same split for the probe, decompose, evaluate, the report and the app, on
#: any machine, with nothing written beside the data; adding photos never moves the others.
HELDOUT_PERCENT = 20


def has_splits(root: str | Path) -> bool:
    """True for the DIR/train|val/<class>/ layout; False for DIR/<class>/ (ImageFolder)."""
    return any((Path(root) / split).is_dir() for split in SPLITS)


def heldout(path: str | Path) -> bool:
    """Whether an image of an ImageFolder-layout folder belongs to the held-out val split."""
    digest = hashlib.sha256(Path(path).name.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELDOUT_PERCENT


def split_dir(root: str | Path, split: str) -> Path:
    """Where the class folders of ``split`` are: ``root/split``, or ``root`` itself for an ImageFolder."""
    root = Path(root)
    return root / split if has_splits(root) or split not in SPLITS else root


def split_images(root: str | Path, split: str, folder: str) -> list[Path]:
    """The images of one class of one split, sorted by name."""
    files = image_files(split_dir(root, split) / folder, root)
    if has_splits(root) or split not in SPLITS:
        return files
    return [p for p in files if heldout(p) == (split == "val")]


def available_splits(root: str | Path) -> list[str]:
    """The splits a data folder offers (an ImageFolder offers both, through the held-out rule)."""
    root = Path(root)
    if has_splits(root):
        return [s for s in SPLITS if (root / s).is_dir()]
    return list(SPLITS) if root.is_dir() and any(p.is_dir() for p in root.iterdir()) else []


@functools.cache
def imagenet_wnids() -> list[str]:
    """ImageNet-1k's wnids in label order (the label space ``classes.csv`` indexes)."""
    with open(IMAGENET_CLASSES, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["imagenet_index"]))
    return [r["wnid"] for r in rows]


def read_class_map(root: Path) -> dict[str, tuple[int, str]] | None:
    """``root/classes.csv`` (wnid, imagenet_index, name) as folder -> (label, name), if present."""
    path = root / "classes.csv"
    if not path.is_file() or not within(path, root):  # a link out of the folder is not its class map
        return None
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        needed = {"wnid", "imagenet_index", "name"}
        if not needed <= set(reader.fieldnames or ()):
            raise DataError(f"{path} must have the columns {', '.join(sorted(needed))}")
        mapping = {}
        for row in reader:
            label = ascii_number((row["imagenet_index"] or "").strip())
            if label is None:
                raise DataError(
                    f"{path}: imagenet_index must be a whole number of ASCII digits "
                    f"(got {row['imagenet_index']!r} for {row['wnid']!r})"
                )
            mapping[row["wnid"]] = (label, row["name"])
        return mapping


def class_folders(
    root: str | Path, split: str, class_names: list[str], wnids: list[str] | None
) -> tuple[list[ClassFolder], list[Problem]]:
    """The class folders of ``root/split`` mapped to the model's label space.

    A folder named as one of the model's wnids (ImageNet wnids, or a linear probe's class folders)
    maps to that class, named from ``root/classes.csv`` when it lists the folder; other folders map
    through ``root/classes.csv``, or by a numeric name. Folders that map to nothing are reported and
    skipped.
    """
    root = Path(root)
    folder_root = split_dir(root, split)
    if not folder_root.is_dir():
        raise DataError(
            f"{folder_root} does not exist (expected DIR/{split}/<class folder>/<images>, or DIR/<class folder>/<images>)"
        )
    entries = [p for p in folder_root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    outside = [p for p in entries if not within(p, root)]
    folders = sorted(p.name for p in entries if p not in outside)
    if not folders and not outside:
        raise DataError(f"{folder_root} has no class folders")
    class_map = read_class_map(root)
    by_wnid = {w: i for i, w in enumerate(wnids)} if wnids else {}
    # A model whose classes are its own folders (a linear probe) maps folders by name only: classes.csv's
    # ImageNet indices, or a numeric folder name, would land ImageNet photos on its first classes.
    own_space = bool(wnids and list(wnids) != imagenet_wnids())
    classes, problems = [], [Problem(str(p), "a link leading out of the data folder; skipped") for p in outside]
    seen: dict[int, str] = {}
    for folder in folders:
        number = ascii_number(folder)
        if folder in by_wnid:  # the model names this class itself (ImageNet wnids, a probe's class folders)
            label = by_wnid[folder]
            name = class_map[folder][1] if class_map is not None and folder in class_map else class_names[label]
        elif own_space:
            problems.append(Problem(str(folder_root / folder), UNKNOWN_CLASS_FOLDER, unknown_class=True))
            continue
        elif class_map is not None and folder in class_map:
            label, name = class_map[folder]
        elif number is not None and number < len(class_names):
            label, name = number, class_names[number]
        else:
            problems.append(Problem(str(folder_root / folder), UNKNOWN_CLASS_FOLDER, unknown_class=True))
            continue
        if not 0 <= label < len(class_names):
            problems.append(Problem(str(folder_root / folder), f"label {label} is outside the model's {len(class_names)}"))
            continue
        if label in seen:  # two folders, one class: a run would hold that label twice
            raise DataError(
                f"class folders {seen[label]!r} and {folder!r} of {folder_root} both map to label {label} "
                f"({name}): merge them or fix {root / 'classes.csv'}"
            )
        seen[label] = folder
        classes.append(ClassFolder(folder, label, name))
    if not classes and own_space and wnids:
        shown = ", ".join(list(wnids)[:5]) + ("…" if len(wnids) > 5 else "")
        raise NoMatchingClasses(f"no class folder of {folder_root} is one of the model's own class folders ({shown})")
    if not classes:
        raise NoMatchingClasses(
            f"no class folder of {folder_root} matches the model's classes: add {root / 'classes.csv'} "
            "(columns wnid,imagenet_index,name) or name the folders by ImageNet wnid"
        )
    return classes, problems


def scan_split(
    root: str | Path,
    split: str,
    class_names: list[str],
    wnids: list[str] | None = None,
    classes: list[str] | None = None,
    limit: int | None = None,
    min_images: int = 1,
) -> ImageSet:
    """Find the images of ``root/split``; ``classes`` selects folders by folder or readable name.

    Files that are not images by suffix, and classes with fewer than ``min_images`` images, are
    reported in ``problems`` and skipped. ``limit`` keeps the first images of each class (sorted
    by name, so a run is reproducible).
    """
    root = Path(root)
    if limit is not None and limit < 1:
        raise DataError(f"images per class must be at least 1 (got {limit})")
    found, problems = class_folders(root, split, class_names, wnids)
    if classes:
        wanted = set(classes)
        unknown = wanted - {c.folder for c in found} - {c.name for c in found}
        if unknown:
            raise DataError(f"unknown classes in {split_dir(root, split)}: {', '.join(sorted(unknown))}")
        found = [c for c in found if c.folder in wanted or c.name in wanted]
    kept, images = [], {}
    for cls in found:
        folder = split_dir(root, split) / cls.folder
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        paths = split_images(root, split, cls.folder)
        problems += [Problem(str(p), "not an image file; skipped") for p in files if not is_image_file(p)]
        problems += [
            Problem(str(p), "a link leading out of the data folder; skipped")
            for p in files
            if is_image_file(p) and not within(p, root)
        ]
        paths = paths[:limit] if limit else paths
        if len(paths) < min_images:
            problems.append(Problem(str(folder), f"{len(paths)} images, fewer than the {min_images} needed; class skipped"))
            continue
        kept.append(cls)
        images[cls.folder] = paths
    if not kept:
        raise DataError(f"no class of {split_dir(root, split)} has enough images (at least {min_images} each)")
    return ImageSet(root, split, kept, images, problems)
