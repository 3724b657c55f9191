"""What a session uploads, stored as data folders the pipeline reads: single photos of one class,
and zipped image folders. Plain Python (no Streamlit), tested without a browser."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from protolib.data import IMAGE_SUFFIXES, BadImage, Problem, load_image
from protolib.data.uploads import Extracted, Limits, extract_dataset
from protolib.runs.names import safe_name, unique_path


def read_upload(name: str, data: bytes) -> Image.Image:
    """An uploaded file as an RGB image; anything else raises BadImage with a message for people."""
    try:
        return load_image(io.BytesIO(data))
    except BadImage as exc:
        cause = exc.__cause__
        if isinstance(cause, UnidentifiedImageError):
            why = "its content is not a recognised image format"
        elif cause is not None:
            why = str(cause).split(" <_io.")[0].split("\n")[0] or type(cause).__name__
        else:  # refused by load_image itself (e.g. too many pixels): its reason follows the "path: "
            why = str(exc).split(": ", 1)[-1]
        raise BadImage(
            f"“{name}” is not an image that can be read ({why}). "
            f"Upload a photo ({', '.join(sorted(s.lstrip('.').upper() for s in IMAGE_SUFFIXES))})."
        ) from exc


def save_uploads(root: str | Path, split: str, folder: str, files: Sequence[tuple[str, bytes]], room: int | None = None):
    """Store uploaded images as ``root/split/folder/<name>.png`` (a data folder the pipeline reads);
    files that are not images, and those past ``room`` bytes (an upload quota), are reported and not
    stored. Returns (saved paths, problems)."""
    target = Path(root) / split / folder
    target.mkdir(parents=True, exist_ok=True)
    saved, problems = [], []
    for name, data in files:
        try:
            image = read_upload(name, data)
        except BadImage as exc:
            problems.append(Problem(name, str(exc)))
            continue
        encoded = io.BytesIO()
        image.save(encoded, "PNG")
        if room is not None and encoded.tell() > room:
            problems.append(Problem(name, f"“{name}” was not stored: the upload quota is used up ({room} bytes left)"))
            continue
        stem = _stem(name, "image")
        path = target / f"{stem}.png"
        n = 2
        while path.exists():
            path, n = target / f"{stem}-{n}.png", n + 1
        path.write_bytes(encoded.getvalue())
        if room is not None:
            room -= encoded.tell()
        saved.append(path)
    return saved, problems


def extract_zip_upload(root: str | Path, name: str, data: bytes, room: int | None = None) -> Extracted:
    """An uploaded .zip of an image folder, extracted safely into a new folder under ``root`` named
    after the file, in at most ``room`` bytes (an upload quota); raises ``UploadError`` (nothing is kept)."""
    limits = Limits() if room is None else Limits().within(room, "left of the upload quota")
    return extract_dataset(io.BytesIO(data), unique_path(root, _stem(name, "dataset")), limits)


def _stem(file_name: str, fallback: str) -> str:
    """An uploaded file's name without its suffix, safe as a file or folder name (``fallback`` when
    nothing of it is)."""
    try:
        return safe_name(Path(file_name).stem)
    except ValueError:
        return fallback
