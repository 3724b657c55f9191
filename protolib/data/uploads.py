"""Uploaded datasets: a .zip of an image folder, extracted safely into a data folder the pipeline reads.

Two layouts are understood, optionally under one wrapping folder (as "compress this folder" makes):
``train/<class>/<image>`` and ``val/<class>/<image>``, or just ``<class>/<image>`` (all of it goes to
``train/``). A ``classes.csv`` beside them is kept. An archive is untrusted: absolute paths, ``..``,
symbolic links, encrypted members, too many members or too many bytes refuse the whole archive;
files that are not images are skipped and reported. Extraction writes into a temporary folder
beside the target, which becomes the target only when everything went well.
"""

from __future__ import annotations

import stat
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from PIL import Image

from ..files import atomic_dir
from .folders import IMAGE_SUFFIXES, DataError, Problem, read_class_map, size_problem

MAX_MEMBERS = 20_000
MAX_TOTAL_BYTES = 2 * 1024**3  # uncompressed, all members together
MAX_FILE_BYTES = 64 * 1024**2  # one image
SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val"}
CLASS_MAP = "classes.csv"
JUNK = {"__MACOSX", "Thumbs.db", "desktop.ini"}  # written by archivers and file browsers: skipped silently
CHUNK = 1024**2


class UploadError(DataError):
    """The archive cannot be used at all; the message says why. Nothing was extracted."""


@dataclass(frozen=True)
class Limits:
    members: int = MAX_MEMBERS
    total_bytes: int = MAX_TOTAL_BYTES
    file_bytes: int = MAX_FILE_BYTES
    total_note: str = "allowed"  # what ``total_bytes`` is, for messages (e.g. "left of your upload quota")

    def within(self, room: int, note: str) -> Limits:
        """These limits with at most ``room`` bytes in all (an upload quota's room), ``note`` saying so."""
        if room >= self.total_bytes:
            return self
        return Limits(self.members, max(0, room), self.file_bytes, note)


@dataclass
class Extracted:
    """An extracted dataset: its folder, the images per split and class, and what was skipped."""

    root: Path
    layout: str  # "splits" (train/ and val/) or "classes" (class folders only, put in train/)
    counts: dict[str, dict[str, int]]  # split -> class folder -> images
    class_map: bool  # classes.csv kept
    problems: list[Problem] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return sum(sum(per.values()) for per in self.counts.values())

    def summary(self) -> str:
        splits = ", ".join(f"{split}/: {sum(per.values())} images in {len(per)} classes" for split, per in self.counts.items())
        return splits + (", classes.csv" if self.class_map else "")


# -- checking the archive ------------------------------------------------------------------------
def _parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """A member's path components; refuses the archive for absolute paths and ``..``."""
    name = info.filename.replace("\\", "/")  # some Windows archivers write backslashes
    path = PurePosixPath(name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UploadError(f"the archive is refused: “{info.filename}” is an absolute path")
    if ".." in path.parts:
        raise UploadError(f"the archive is refused: “{info.filename}” points outside the archive (..)")
    return tuple(p for p in path.parts if p not in ("", "."))


def _check(members: list[zipfile.ZipInfo], limits: Limits) -> None:
    """Refuse the archive before anything is written (declared sizes can lie: writing counts bytes too)."""
    if len(members) > limits.members:
        raise UploadError(f"the archive has {len(members)} members, more than the {limits.members} allowed")
    declared = 0
    for info in members:
        _parts(info)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadError(f"the archive is refused: “{info.filename}” is a symbolic link")
        if info.flag_bits & 0x1:
            raise UploadError(f"“{info.filename}” is password-protected; upload an archive without a password")
        if info.file_size > limits.file_bytes and _is_image(_parts(info)):
            raise UploadError(f"“{info.filename}” would be {_mb(info.file_size)}, more than {_mb(limits.file_bytes)} for one image")
        declared += info.file_size
    if declared > limits.total_bytes:
        raise UploadError(
            f"the archive would unpack to {_mb(declared)}, more than the {_mb(limits.total_bytes)} {limits.total_note}"
        )


def _mb(n: int) -> str:
    return f"{n / 1024**2:.0f} MB" if n >= 1024**2 else f"{n} bytes"


def _is_junk(parts: tuple[str, ...]) -> bool:
    return any(p in JUNK or p.startswith(".") for p in parts)


def _is_image(parts: tuple[str, ...]) -> bool:
    return bool(parts) and PurePosixPath(parts[-1]).suffix.lower() in IMAGE_SUFFIXES


# -- where each member goes ----------------------------------------------------------------------
def _common_prefix(paths: list[tuple[str, ...]]) -> tuple[str, ...]:
    prefix = paths[0]
    for p in paths[1:]:
        n = 0
        while n < min(len(prefix), len(p)) and prefix[n] == p[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


def plan_layout(files: list[tuple[str, ...]]) -> tuple[str, tuple[str, ...]]:
    """("splits" or "classes", the wrapping folders to strip) from the image paths of an archive.

    The folders above every image's class folder are the wrapper; a wrapper ending in a split name
    (``data/train/<class>/...`` only), or split names right under it, mean the split layout.
    """
    nested = [p for p in files if len(p) >= 2]
    if not nested:
        raise UploadError("no image in the archive is inside a class folder (expected <class>/<image> or train/<class>/<image>)")
    prefix = _common_prefix([p[:-2] for p in nested])
    if prefix and prefix[-1].lower() in SPLITS:
        return "splits", prefix[:-1]
    n = len(prefix)
    if any(len(p) == n + 3 and p[n].lower() in SPLITS for p in nested):
        return "splits", prefix
    return "classes", prefix


def _destination(parts: tuple[str, ...], layout: str, prefix: tuple[str, ...]) -> tuple[str, str, str] | str:
    """(split, class folder, file name) of an image, or why it is skipped."""
    rest = parts[len(prefix) :] if parts[: len(prefix)] == prefix else None
    if layout == "splits":
        if rest is None or len(rest) != 3 or rest[0].lower() not in SPLITS:
            return "not in train/<class>/ or val/<class>/; skipped"
        return SPLITS[rest[0].lower()], rest[1], rest[2]
    if rest is None or len(rest) != 2:
        return "not directly in a class folder; skipped"
    return "train", rest[0], rest[1]


# -- writing ------------------------------------------------------------------------------------
class _Budget:
    """Counts the bytes actually written, whatever the archive declared."""

    def __init__(self, limits: Limits) -> None:
        self.limits, self.total = limits, 0

    def copy(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
        written = 0
        with archive.open(info) as src, open(target, "xb") as out:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                self.total += len(chunk)
                if written > self.limits.file_bytes:
                    raise UploadError(f"“{info.filename}” unpacks to more than {_mb(self.limits.file_bytes)}")
                if self.total > self.limits.total_bytes:
                    raise UploadError(
                        f"the archive unpacks to more than the {_mb(self.limits.total_bytes)} {self.limits.total_note}"
                    )
                out.write(chunk)


def _image_problem(path: Path) -> str | None:
    """Why an extracted file is not a usable image, or None (cheap: headers and checksums, no full decode)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                problem = size_problem(img.width, img.height)
                if problem:
                    return f"{problem}; skipped"
                img.verify()
    except Exception as exc:  # PIL raises many kinds for damaged files; any of them means "skip it"
        return f"not a readable image ({type(exc).__name__}); skipped"
    return None


def _extract_members(
    archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], layout: str, prefix: tuple[str, ...], tmp: Path, limits: Limits
) -> tuple[dict[str, Counter[str]], bool, list[Problem]]:
    counts: dict[str, Counter[str]] = {}
    problems, class_map, budget = [], False, _Budget(limits)
    for info in members:
        parts = _parts(info)
        if info.is_dir() or not parts or _is_junk(parts):
            continue
        if parts == (*prefix, CLASS_MAP):
            budget.copy(archive, info, tmp / CLASS_MAP)
            class_map = True
            continue
        if not _is_image(parts):
            problems.append(Problem(info.filename, "not an image file; skipped"))
            continue
        where = _destination(parts, layout, prefix)
        if isinstance(where, str):
            problems.append(Problem(info.filename, where))
            continue
        split, folder, name = where
        target = tmp / split / folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # e.g. Train/ and train/ in one archive
            problems.append(Problem(info.filename, f"a second {split}/{folder}/{name}; skipped"))
            continue
        budget.copy(archive, info, target)
        why = _image_problem(target)
        if why:
            target.unlink()
            problems.append(Problem(info.filename, why))
            continue
        counts.setdefault(split, Counter())[folder] += 1
    return counts, class_map, problems


def _check_class_map(tmp: Path, problems: list[Problem]) -> bool:
    """A damaged classes.csv would make every later scan of the folder fail: drop it, with a note."""
    try:
        read_class_map(tmp)
        return True
    except (DataError, OSError, UnicodeDecodeError) as exc:
        (tmp / CLASS_MAP).unlink()
        problems.append(Problem(CLASS_MAP, f"{exc}; ignored (folder names are used)"))
        return False


def extract_dataset(source: str | Path | IO[bytes], target: str | Path, limits: Limits | None = None) -> Extracted:
    """Extract a zipped image folder (a path or a binary file object) into the new folder ``target``.

    Raises UploadError (nothing is left behind) for an archive that is corrupt, unsafe, too large,
    or has no readable image; files that are not usable images are skipped and listed in ``problems``.
    """
    target, limits = Path(target), limits or Limits()
    try:
        with zipfile.ZipFile(source) as archive:
            members = archive.infolist()
            _check(members, limits)
            images = [p for info in members if not info.is_dir() and _is_image(p := _parts(info)) and not _is_junk(p)]
            if not images:
                raise UploadError("the archive has no image files (JPEG, PNG, BMP, GIF, TIFF or WebP)")
            layout, prefix = plan_layout(images)
            with atomic_dir(target) as tmp:
                counts, class_map, problems = _extract_members(archive, members, layout, prefix, tmp, limits)
                if not counts:
                    raise UploadError("no file of the archive is a readable image in a class folder: " + _first(problems))
                if class_map:
                    class_map = _check_class_map(tmp, problems)
    except zipfile.BadZipFile as exc:
        raise UploadError(f"the file is not a zip archive, or it is damaged ({exc})") from exc
    except (zlib.error, EOFError, NotImplementedError) as exc:  # damaged data, or a compression zipfile lacks
        raise UploadError(f"the archive cannot be read ({type(exc).__name__}: {exc})") from exc
    per_split: dict[str, dict[str, int]] = {
        split: dict(sorted(counts[split].items())) for split in ("train", "val") if split in counts
    }
    return Extracted(target, layout, per_split, class_map, problems)


def _first(problems: list[Problem]) -> str:
    return f"e.g. {problems[0]}" if problems else "none found"
