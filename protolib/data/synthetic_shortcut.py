"""The shortcut benchmark's generated photos: each class's object (drawn as in ``synthetic.py``) on a
background that, in training, goes with the class; with their object masks and ``groups.csv``.

Background b is "the own background" of class b. Each has a colour and a texture of its own (a darker shade of
the colour), a little per-photo jitter, and a few thin lines of any colour as clutter. They are less saturated
than the parts, but far easier to tell apart than the parts: a model trained where the background goes with the
class learns the shortcut. The object gets a grey body (the same in every class) so that it covers about a
quarter of the photo; it is never occluded.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..files import atomic_dir, atomic_path
from .synthetic import (
    _SHIFT,
    MAX_CLASSES,
    PIXEL_NOISE,
    PartsSample,
    _check_num_classes,
    _draw_object,
    _fixed,
    _keypoints,
    _texture,
    class_names,
    write_image_folder,
)

_BACKGROUND_KINDS = (  # name, RGB, texture (as the parts' textures), period of the texture at 112 px
    ("sand", (192, 166, 112), "stripes", 7.0),
    ("moss", (104, 138, 78), "dots", 6.0),
    ("slate", (92, 108, 150), "checker", 8.0),
    ("plum", (148, 92, 126), "stripes", 5.0),
    ("rust", (168, 98, 66), "checker", 6.0),
    ("teal", (72, 136, 128), "dots", 8.0),
)
#: In the training split, the probability that a photo shows its class's own background.
SPURIOUS = 0.95
_BACKGROUND_SHADE = 0.4  # the texture's darker shade, as a share of the background colour
GROUPS_CSV = "groups.csv"
MASKS_DIR = "masks"
_GROUPS_FIELDS = ("file", "split", "class", "background", "group")


@dataclass(eq=False)
class ShortcutSample(PartsSample):
    """A parts sample on a known background: ``background`` (its index, ``background_names()``) and
    ``object_mask`` (H, W) bool, True where the object (hub, arms, parts) is; the rest is background."""

    background: int = 0
    object_mask: np.ndarray | None = None


def background_names(num_classes: int = 4) -> list[str]:
    """Names of the backgrounds; background b is the own background of class b."""
    _check_num_classes(num_classes)
    return [name for name, *_ in _BACKGROUND_KINDS[:num_classes]]


def group_name(class_name: str, background: str) -> str:
    """How ``groups.csv`` names the group (class, background): ``"alpha on sand"``."""
    return f"{class_name} on {background}"


def _shortcut_background(rng: np.random.Generator, background: int, size: int, unit: float) -> np.ndarray:
    _, rgb, texture, period = _BACKGROUND_KINDS[background]
    colour = np.clip(np.asarray(rgb, np.float32) + rng.uniform(-10, 10, 3), 0, 255)
    light = cv2.resize(rng.uniform(0.85, 1.15, (4, 4)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    image = light[..., None] * colour
    grid = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    dark = _texture(texture, grid, rng.uniform(0, size, 2), rng.uniform(0, 2 * np.pi), period * unit * rng.uniform(0.9, 1.1))
    image[dark] *= _BACKGROUND_SHADE
    for _ in range(rng.integers(2, 5)):  # thin lines in any colour, as in the parts data
        ends = _fixed(rng.uniform(0, size, (2, 2)))
        cv2.line(image, tuple(ends[0]), tuple(ends[1]), rng.uniform(0, 255, 3).tolist(), max(1, round(unit)), cv2.LINE_8, _SHIFT)
    return np.clip(image, 0, 255)


def _render_shortcut(rng: np.random.Generator, label: int, background: int, size: int) -> ShortcutSample:
    unit = size / 112
    image = _shortcut_background(rng, background, size, unit)
    parts, centres, owner, object_mask = _draw_object(rng, image, label, size, unit, 0.0, body=True)
    image = np.clip(np.round(image) + rng.integers(-PIXEL_NOISE, PIXEL_NOISE + 1, image.shape), 0, 255)
    keypoints, visible = _keypoints(parts, centres, owner, size)
    return ShortcutSample(image.astype(np.uint8), label, keypoints, visible, background, object_mask)


def make_shortcut_dataset(
    n_per_class: int, seed: int, size: int = 112, num_classes: int = 4, spurious: float = SPURIOUS
) -> list[ShortcutSample]:
    """``n_per_class`` photos of each class, grouped by class; each shows its class's own background
    with probability ``spurious``, otherwise another background drawn uniformly (the training split).

    Deterministic for a seed; sample i of class c depends only on (seed, c, i, size, spurious)."""
    _check_num_classes(num_classes)
    if size < 32 or not 0 <= spurious <= 1:
        raise ValueError(f"size must be >= 32 and spurious in [0, 1] (got {size}, {spurious})")
    samples = []
    for label in range(num_classes):
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, label, i, 1])
            others = [b for b in range(num_classes) if b != label]
            background = label if not others or rng.random() < spurious else int(rng.choice(others))
            samples.append(_render_shortcut(rng, label, background, size))
    return samples


def make_balanced_shortcut_dataset(n_per_group: int, seed: int, size: int = 112, num_classes: int = 4) -> list[ShortcutSample]:
    """``n_per_group`` photos of every (class, background) group: the background is independent of
    the class (the validation and test splits). Grouped by class, then background."""
    _check_num_classes(num_classes)
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    return [
        _render_shortcut(np.random.default_rng([seed, label, background, i, 2]), label, background, size)
        for label in range(num_classes)
        for background in range(num_classes)
        for i in range(n_per_group)
    ]


def write_shortcut_split(samples: list[ShortcutSample], root: Path, split: str) -> list[dict[str, str]]:
    """Write a split as :func:`write_image_folder` does (images and keypoints.csv), plus the object masks
    ``root/masks/<split>/<class>/<i:05d>.png`` (255 = object, 0 = background); returns the split's rows
    of ``groups.csv`` (see :func:`write_groups`)."""
    root = Path(root)
    write_image_folder(samples, root, split)
    names, backgrounds = class_names(MAX_CLASSES), background_names(MAX_CLASSES)
    rows = []
    with atomic_dir(root / MASKS_DIR / split, overwrite=True) as tmp:
        for i, sample in enumerate(samples):
            rel = f"{names[sample.label]}/{i:05d}.png"
            (tmp / names[sample.label]).mkdir(exist_ok=True)
            if sample.object_mask is None:
                raise ValueError(f"sample {i} has no object mask")
            if not cv2.imwrite(str(tmp / rel), sample.object_mask.astype(np.uint8) * 255):
                raise OSError(f"could not write the mask of {rel}")
            cls, bg = names[sample.label], backgrounds[sample.background]
            rows.append({"file": f"{split}/{rel}", "split": split, "class": cls, "background": bg, "group": group_name(cls, bg)})
    return rows


def write_groups(root: Path, rows: list[dict[str, str]]) -> Path:
    """``root/groups.csv``: one row per photo, columns file (relative to ``root``), split, class,
    background, group."""
    path = Path(root) / GROUPS_CSV
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_GROUPS_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_groups(root: Path) -> dict[str, dict[str, str]]:
    """``root/groups.csv`` as file (relative to ``root``, with /) -> its row; {} when there is none."""
    path = Path(root) / GROUPS_CSV
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {row["file"]: row for row in csv.DictReader(f)}


def mask_path(root: Path, file: str | Path) -> Path:
    """Where the object mask of the photo ``root/file`` is (``file`` relative to ``root``)."""
    return Path(root) / MASKS_DIR / file


def read_object_mask(root: Path, file: str | Path) -> np.ndarray:
    """The object mask of the photo ``root/file``: (H, W) bool, True on the object."""
    path = mask_path(root, file)
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise OSError(f"could not read the mask {path}")
    return mask > 127
