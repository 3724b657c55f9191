"""Part keypoints of a data folder, for ProtoEval consistency and stability of any run.

Two layouts carry keypoints: a CUB-200-2011 root (``images.txt``, ``parts/part_locs.txt``: scored
by ``cub.cub_protoeval``) and an image folder with a ``keypoints.csv`` (written by
``cub.export_image_folder`` at the folder's root with a ``split`` column, or by the synthetic parts
benchmark inside each split). Anything else has no keypoints, and the report says so.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..backbones import Backbone
from ..data import DataError, load_image
from ..data.cub import map_keypoints
from ..data.features import Progress
from ..runs import Run


def keypoint_layout(data: str | Path, split: str = "val") -> tuple[str, Path] | None:
    """("cub", root) or ("csv", keypoints.csv) when ``data`` carries part keypoints, else None."""
    data = Path(data)
    if (data / "images.txt").is_file() and (data / "parts" / "part_locs.txt").is_file():
        return "cub", data
    for candidate in (data / split / "keypoints.csv", data / "keypoints.csv"):
        if candidate.is_file():
            return "csv", candidate
    return None


def read_keypoints_csv(path: Path, split: str) -> dict[str, list[tuple[int, float, float, bool]]]:
    """file (relative to the split folder, "<class folder>/<name>") -> [(part, x, y, visible)]."""
    rows: dict[str, list[tuple[int, float, float, bool]]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"file", "part", "x", "y", "visible"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path} lacks the columns {', '.join(sorted(missing))}")
        for row in reader:
            if row.get("split", split) != split:
                continue
            try:
                rows.setdefault(row["file"], []).append(
                    (int(row["part"]), float(row["x"]), float(row["y"]), row["visible"].strip() == "1")
                )
            except ValueError as exc:
                raise DataError(f"{path}: bad row {row} ({exc})") from exc
    return rows


def csv_class_batches(
    backbone: Backbone,
    run: Run,
    data: str | Path,
    csv_path: Path,
    split: str = "val",
    images_per_class: int | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[int, torch.Tensor, np.ndarray, np.ndarray]]:
    """Per decomposed class with keypoints: (position, normalised images, keypoints (N, P, 2), visible (N, P)).

    As in ProtoEval, each image is resized to the model's input size (no crop) and its keypoints
    mapped with it; normalisation is the model's own.
    """
    rows = read_keypoints_csv(csv_path, split)
    if not rows:
        return
    parts = max(part for entries in rows.values() for part, *_ in entries) + 1
    size = backbone.preprocessing.crop_size
    by_folder: dict[str, list[str]] = {}
    for file in sorted(rows):
        by_folder.setdefault(file.split("/", 1)[0], []).append(file)
    classes = [(c, entry["folder"]) for c, entry in enumerate(run.manifest["classes"]) if entry["folder"] in by_folder]
    total = sum(len(by_folder[f][:images_per_class]) for _, f in classes)
    done = 0
    for position, folder in classes:
        xs, kps, vis = [], [], []
        for file in by_folder[folder][:images_per_class]:
            picture = load_image(Path(data) / split / file)
            keypoints, visible = np.full((parts, 2), np.nan), np.zeros(parts, bool)
            for part, x, y, seen in rows[file]:
                if seen:
                    keypoints[part] = x, y
                    visible[part] = True
            keypoints = map_keypoints(keypoints, (0, 0, *picture.size), (size, size))
            xs.append(backbone.preprocessing.normalize(picture.resize((size, size), Image.Resampling.BILINEAR)))
            kps.append(keypoints)
            vis.append(visible)
        done += len(xs)
        if progress:
            progress("protoeval", done, total)
        yield position, torch.stack(xs), np.stack(kps), np.stack(vis)
