"""A generated ground-truth parts dataset: objects made of known parts, reproducible from a seed.

Each class is an object built from 3 or 4 *parts* (disc, square, triangle, ring, striped blob,
cross) around a grey hub with grey arms. The hub and arms are the same for every class, so the
class can only be told from its parts. Every part has its own global index (``part_names()``):
no two classes share a part kind. Every (shape, colour) pair is used once, but each shape and
each colour shows up in several classes, so neither shape alone nor colour alone gives the
class away. Objects get a random rotation, translation and scale. They sit on a cluttered
background: a smooth muted colour field, elongated muted ellipses, and thin lines of any
colour. None of these is shaped like a part, so colour alone cannot find the parts. Sometimes a
muted occluder disc is drawn over the object.

Keypoints follow the pixel-centre convention (pixel (row i, column j) is centred on x=j, y=i,
as in OpenCV drawing). ``keypoints`` has one row per part kind of the whole dataset,
P = ``len(part_names())`` = 22, whatever ``num_classes`` is. Parts that are not in the sample's
class have NaN keypoints and ``visible=False``. A part of the class is visible when its centre
pixel is inside the image and that pixel was drawn by the part, not by a later occluder.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..files import atomic_dir, atomic_path

MAX_CLASSES = 6
PIXEL_NOISE = 6  # uniform integer sensor noise in [-6, 6] added to every pixel channel
_CLASS_NAMES = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")  # alphabetical = index order

_COLOURS = {  # saturated RGB colours, kept inside [20, 235] so the sensor noise never clips them
    "red": (220, 40, 40),
    "blue": (40, 80, 225),
    "green": (40, 170, 60),
    "yellow": (235, 200, 30),
    "magenta": (205, 50, 205),
    "cyan": (30, 190, 205),
}
_TEXTURE_WORD = {"solid": "", "stripes": "striped ", "checker": "checkered ", "dots": "dotted "}


@dataclass(frozen=True)
class PartKind:
    """One kind of part: its shape, main colour and texture (the second texture colour is a dark shade)."""

    label: int
    shape: str
    colour: str
    texture: str

    @property
    def name(self) -> str:
        return f"{self.colour} {_TEXTURE_WORD[self.texture]}{self.shape}"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return _COLOURS[self.colour]

    @property
    def rgb_dark(self) -> tuple[int, int, int]:
        r, g, b = self.rgb
        return int(r * 0.45), int(g * 0.45), int(b * 0.45)


# Per class, parts as "shape colour texture" in slot order (slot j sits at angle j * 360/n around the hub).
_CLASS_PARTS = (
    "disc red solid, square blue stripes, triangle green solid, ring yellow solid",
    "triangle red stripes, disc yellow checker, square cyan solid",
    "square green dots, ring magenta solid, blob red stripes, disc blue solid",
    "disc green stripes, triangle blue checker, cross yellow solid, blob magenta dots",
    "cross red solid, square magenta checker, ring cyan stripes",
    "blob yellow stripes, cross blue dots, disc magenta solid, triangle cyan solid",
)
PART_KINDS: tuple[PartKind, ...] = tuple(
    PartKind(label, *spec.split()) for label, specs in enumerate(_CLASS_PARTS) for spec in specs.split(", ")
)
NUM_PARTS = len(PART_KINDS)


@dataclass(eq=False)  # numpy fields: compare with np.array_equal, not ==
class PartsSample:
    """One image with its class and the ground-truth centre of every part kind of the dataset.

    ``keypoints`` is (P, 2) float64 (x, y) in pixel-centre coordinates, with P = ``NUM_PARTS``
    and global part indices as in ``part_names()``. ``visible`` is (P,) bool.
    """

    image: np.ndarray
    label: int
    keypoints: np.ndarray
    visible: np.ndarray


def class_names(num_classes: int = 4) -> list[str]:
    """Folder names of the first ``num_classes`` classes. Sorted order equals label order, as ImageFolder needs."""
    _check_num_classes(num_classes)
    return list(_CLASS_NAMES[:num_classes])


def part_names() -> list[str]:
    """Readable names of all part kinds, indexed by global part index (P = 22 for all ``num_classes``)."""
    return [kind.name for kind in PART_KINDS]


def parts_of_class(label: int) -> list[int]:
    """Global indices of the parts that make up class ``label``."""
    return [i for i, kind in enumerate(PART_KINDS) if kind.label == label]


def _check_num_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}, got {num_classes}")


# -- rendering -----------------------------------------------------------------------------------
_SHIFT = 4  # OpenCV fixed-point bits: lets shapes sit at sub-pixel positions
_ONE = 1 << _SHIFT


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points) * _ONE).astype(np.int32)


def _polygon(n: int, radius: float, phase: float) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _cross(radius: float) -> np.ndarray:
    a, w = radius, 0.3 * radius
    return np.array([(w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w), (-w, -a), (w, -a)])


def _shape_mask(shape: str, size: int, centre: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """A uint8 mask (1 inside) of one part shape drawn without anti-aliasing (exact colours)."""
    mask = np.zeros((size, size), np.uint8)
    c = tuple(_fixed(centre))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    if shape == "disc":
        cv2.circle(mask, c, int(radius * _ONE), 1, -1, cv2.LINE_8, _SHIFT)
    elif shape == "ring":  # a bullseye: ring plus a centre dot, so the centre pixel belongs to the part
        cv2.circle(mask, c, int(radius * _ONE), 1, -1, cv2.LINE_8, _SHIFT)
        cv2.circle(mask, c, int(0.6 * radius * _ONE), 0, -1, cv2.LINE_8, _SHIFT)
        cv2.circle(mask, c, int(0.3 * radius * _ONE), 1, -1, cv2.LINE_8, _SHIFT)
    elif shape == "blob":
        axes = (int(1.25 * radius * _ONE), int(0.7 * radius * _ONE))
        cv2.ellipse(mask, c, axes, math.degrees(angle), 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
    else:
        local = {
            "square": _polygon(4, 1.1 * radius, math.pi / 4),
            "triangle": _polygon(3, 1.2 * radius, -math.pi / 2),
            "cross": _cross(1.1 * radius),
        }[shape]
        cv2.fillPoly(mask, [_fixed(local @ rot.T + centre)], 1, cv2.LINE_8, _SHIFT)
    return mask


def _texture(texture: str, grid: tuple[np.ndarray, np.ndarray], centre: np.ndarray, angle: float, period: float) -> np.ndarray:
    """Bool map, True where the texture shows its dark second colour (pattern turns with the part)."""
    x, y = grid[0] - centre[0], grid[1] - centre[1]
    u = (x * math.cos(angle) + y * math.sin(angle)) / period
    v = (-x * math.sin(angle) + y * math.cos(angle)) / period
    if texture == "solid":
        return np.zeros(x.shape, bool)
    if texture == "stripes":
        return np.floor(u + 0.25).astype(int) % 2 == 1
    if texture == "checker":
        return (np.floor(u + 0.5).astype(int) + np.floor(v + 0.5).astype(int)) % 2 == 1
    return (u - np.round(u)) ** 2 + (v - np.round(v)) ** 2 < 0.3**2  # dots


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation colour: clutter must never look like a (saturated) part."""
    return np.clip(rng.uniform(70, 170) + rng.uniform(-22, 22, 3), 0, 255)


def _background(rng: np.random.Generator, size: int, unit: float) -> np.ndarray:
    coarse = np.stack([_muted(rng) for _ in range(16)]).reshape(4, 4, 3).astype(np.float32)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(6, 12)):  # elongated muted ellipses: no part is this elongated or this dull
        centre = _fixed(rng.uniform(0, size, 2))
        long = rng.uniform(6, 20) * unit
        axes = (int(long * _ONE), int(long / rng.uniform(2.5, 5) * _ONE))
        cv2.ellipse(image, tuple(centre), axes, rng.uniform(0, 360), 0, 360, _muted(rng).tolist(), -1, cv2.LINE_8, _SHIFT)
    for _ in range(rng.integers(2, 6)):  # thin lines in any colour: colour alone cannot find a part
        ends = _fixed(rng.uniform(0, size, (2, 2)))
        colour = rng.uniform(0, 255, 3).tolist()
        cv2.line(image, tuple(ends[0]), tuple(ends[1]), colour, max(1, round(unit)), cv2.LINE_8, _SHIFT)
    return image


def _draw_object(
    rng: np.random.Generator,
    image: np.ndarray,
    label: int,
    size: int,
    unit: float,
    occluder_probability: float = 0.35,
    body: bool = False,
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """Draw the object of class ``label`` (hub, arms, parts, maybe an occluder) onto ``image`` in place.
    ``body``: first a grey disc reaching the parts' centres (the same in every class), so that the object
    covers a good share of the photo, as a bird does in a bird photo.

    Returns (its global part indices, their centres (n, 2), ``owner`` (which part drew each pixel, -1:
    none), ``object_mask`` (bool, True where the hub, an arm or a part is visible)).
    """
    owner = np.full((size, size), -1, np.int16)  # which part drew each pixel (-1: none)
    drawn = np.zeros((size, size), np.uint8)  # hub, arms and parts: the object's pixels

    parts = parts_of_class(label)
    scale = rng.uniform(0.8, 1.25)
    centre = size / 2 - 0.5 + rng.uniform(-22, 22, 2) * unit
    turn = rng.uniform(0, 2 * np.pi)
    slot_angles = turn + 2 * np.pi * np.arange(len(parts)) / len(parts) + rng.uniform(-0.14, 0.14, len(parts))
    dist = 28 * unit * scale * rng.uniform(0.92, 1.08, len(parts))
    centres = centre + dist[:, None] * np.stack([np.cos(slot_angles), np.sin(slot_angles)], axis=1)

    # The hub and arms look the same in every class: only the parts tell the classes apart.
    grey = (118, 118, 118)
    if body:
        for canvas, colour in ((image, grey), (drawn, 1)):
            cv2.circle(canvas, tuple(_fixed(centre)), int(dist.mean() * _ONE), colour, -1, cv2.LINE_8, _SHIFT)
    for c in centres:
        for canvas, colour in ((image, grey), (drawn, 1)):
            cv2.line(
                canvas,
                tuple(_fixed(centre)),
                tuple(_fixed(c)),
                colour,
                max(2, round(4 * unit * scale)),
                cv2.LINE_8,
                _SHIFT,
            )
    for canvas, colour in ((image, grey), (drawn, 1)):
        cv2.circle(canvas, tuple(_fixed(centre)), int(8 * unit * scale * _ONE), colour, -1, cv2.LINE_8, _SHIFT)

    grid = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    for index, c in zip(parts, centres, strict=True):
        kind = PART_KINDS[index]
        angle = rng.uniform(0, 2 * np.pi)
        mask = _shape_mask(kind.shape, size, c, 10 * unit * scale, angle).astype(bool)
        dark = _texture(kind.texture, grid, c, angle, 5 * unit * scale)
        image[mask] = np.where(dark[mask, None], kind.rgb_dark, kind.rgb)
        owner[mask] = index
        drawn[mask] = 1

    if rng.random() < occluder_probability:  # an occluder near a random part; it hides that part when it covers its centre
        target = centres[rng.integers(len(parts))] + rng.uniform(-10, 10, 2) * unit * scale
        radius = rng.uniform(8, 14) * unit * scale
        occ = np.zeros((size, size), np.uint8)
        cv2.circle(occ, tuple(_fixed(target)), int(radius * _ONE), 1, -1, cv2.LINE_8, _SHIFT)
        image[occ.astype(bool)] = _muted(rng)
        owner[occ.astype(bool)] = -1
        drawn[occ.astype(bool)] = 0
    return parts, centres, owner, drawn.astype(bool)


def _keypoints(parts: list[int], centres: np.ndarray, owner: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    keypoints = np.full((NUM_PARTS, 2), np.nan)
    keypoints[parts] = centres
    visible = np.zeros(NUM_PARTS, bool)
    pix = np.floor(centres + 0.5).astype(int)  # the pixel whose centre is nearest
    inside = np.all((pix >= 0) & (pix < size), axis=1)
    visible[parts] = inside & (owner[pix[:, 1].clip(0, size - 1), pix[:, 0].clip(0, size - 1)] == parts)
    return keypoints, visible


def _render(rng: np.random.Generator, label: int, size: int) -> PartsSample:
    unit = size / 112  # all geometry was tuned at 112 px
    image = _background(rng, size, unit)
    parts, centres, owner, _ = _draw_object(rng, image, label, size, unit)
    image = np.clip(np.round(image) + rng.integers(-PIXEL_NOISE, PIXEL_NOISE + 1, image.shape), 0, 255)
    keypoints, visible = _keypoints(parts, centres, owner, size)
    return PartsSample(image.astype(np.uint8), label, keypoints, visible)


def make_parts_dataset(n_per_class: int, seed: int, size: int = 112, num_classes: int = 4) -> list[PartsSample]:
    """``n_per_class`` images of each of the first ``num_classes`` classes, grouped by class.

    The result is deterministic for a seed. Sample i of class c depends only on (seed, c, i, size),
    so a larger ``n_per_class`` extends a smaller one. Use different seeds for train and val.
    """
    _check_num_classes(num_classes)
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    return [
        _render(np.random.default_rng([seed, label, i]), label, size) for label in range(num_classes) for i in range(n_per_class)
    ]


# -- image folder --------------------------------------------------------------------------------
_CSV_FIELDS = ("file", "part", "x", "y", "visible")


def write_image_folder(samples: Sequence[PartsSample], root: Path, split: str) -> Path:
    """Write ``root/split/<class>/<i:05d>.png`` and ``root/split/keypoints.csv``, and return ``root/split``.

    The split folder appears complete or not at all, and replaces any earlier one.

    The CSV has one row per (image, part of the image's class), visible or not. Columns: file
    (relative to ``root/split``), part (global index), x, y (pixel-centre coordinates, written
    with full float precision), visible (0/1). Parts of other classes are not listed.
    """
    out = Path(root) / split
    names = class_names(MAX_CLASSES)
    rows = []
    with atomic_dir(out, overwrite=True) as tmp:  # a rewrite never leaves stale images of an older, larger split
        for i, sample in enumerate(samples):
            rel = f"{names[sample.label]}/{i:05d}.png"
            (tmp / names[sample.label]).mkdir(exist_ok=True)
            if not cv2.imwrite(str(tmp / rel), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {out / rel}")
            for part in parts_of_class(sample.label):
                x, y = sample.keypoints[part]
                rows.append((rel, part, repr(float(x)), repr(float(y)), int(sample.visible[part])))
        with open(tmp / "keypoints.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(_CSV_FIELDS)
            writer.writerows(rows)
    return out


def read_image_folder(root: Path, split: str) -> list[PartsSample]:
    """Read back what :func:`write_image_folder` wrote, in the original sample order."""
    base = Path(root) / split
    label_of = {name: label for label, name in enumerate(class_names(MAX_CLASSES))}
    by_file: dict[str, list[dict[str, str]]] = {}
    with open(base / "keypoints.csv", newline="") as f:
        for row in csv.DictReader(f):
            by_file.setdefault(row["file"], []).append(row)
    samples = []
    for rel in sorted(by_file, key=lambda r: int(Path(r).stem)):
        bgr = cv2.imread(str(base / rel), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"could not read {base / rel}")
        keypoints, visible = np.full((NUM_PARTS, 2), np.nan), np.zeros(NUM_PARTS, bool)
        for row in by_file[rel]:
            part = int(row["part"])
            keypoints[part] = float(row["x"]), float(row["y"])
            visible[part] = row["visible"] == "1"
        samples.append(PartsSample(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), label_of[Path(rel).parent.name], keypoints, visible))
    return samples


# -- the shortcut data: each class's object on a background that, in training, goes with the class --------
# Background b is "the own background" of class b. Each has a colour and a texture of its own (a darker
# shade of the colour), a little per-photo jitter, and a few thin lines of any colour as clutter. They are
# less saturated than the parts, but far easier to tell apart than the parts: a model trained where the
# background goes with the class learns the shortcut. The object gets a grey body (the same in every
# class) so that it covers about a quarter of the photo; it is never occluded.
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
