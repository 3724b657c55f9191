"""The shortcut benchmark's data folder (generated once for all seeds) and what it reads back from it: each
split's pooled features with labels and groups (in ``groups.csv``'s order, one feature-cache entry per split),
and the reference that pools the object's cells only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..backbones import Backbone
from ..data import DataError
from ..data.features import extract_features
from ..data.synthetic import class_names
from ..data.synthetic_shortcut import (
    make_balanced_shortcut_dataset,
    make_shortcut_dataset,
    read_groups,
    read_object_mask,
    write_groups,
    write_shortcut_split,
)
from ..files import atomic_path
from .shortcut_config import ShortcutConfig

#: bumped whenever the generated photos change, so that an older data folder is not reused
GENERATOR = "shortcut-photos/1"


def data_spec(cfg: ShortcutConfig) -> dict:
    """What the data folder is made from (the generator's version, sizes, seed): it is reused while this holds."""
    keys = (
        "num_classes",
        "size",
        "train_per_class",
        "heldout_per_class",
        "labels_per_group",
        "test_per_group",
        "spurious",
        "data_seed",
    )
    return {"generator": GENERATOR, **{key: getattr(cfg, key) for key in keys}}


def prepare_shortcut_data(out: Path, cfg: ShortcutConfig) -> Path:
    """Write ``out/data``: train/, heldout/, val/, test/ image folders (with keypoints.csv), the object
    masks ``masks/<split>/<class>/<name>.png`` and ``groups.csv``; reused when unchanged."""
    root, spec_file = Path(out) / "data", Path(out) / "data" / "dataset.json"
    if spec_file.is_file() and json.loads(spec_file.read_text()) == data_spec(cfg) and (root / "groups.csv").is_file():
        return root
    s, n, size = cfg.data_seed, cfg.num_classes, cfg.size
    splits = {
        "train": make_shortcut_dataset(cfg.train_per_class, 4 * s, size, n, cfg.spurious),
        "heldout": make_shortcut_dataset(cfg.heldout_per_class, 4 * s + 1, size, n, cfg.spurious),
        "val": make_balanced_shortcut_dataset(cfg.labels_per_group, 4 * s + 2, size, n),
        "test": make_balanced_shortcut_dataset(cfg.test_per_group, 4 * s + 3, size, n),
    }
    rows = []
    for split, samples in splits.items():
        rows += write_shortcut_split(samples, root, split)
    write_groups(root, rows)
    with atomic_path(spec_file) as tmp:
        tmp.write_text(json.dumps(data_spec(cfg)))
    return root


@dataclass
class GroupedFeatures:
    """Pooled features of one split with labels and groups (in groups.csv's order)."""

    files: list[str]
    pooled: torch.Tensor  # (N, D)
    logits: torch.Tensor  # (N, C) the model's own
    labels: torch.Tensor  # (N,)
    groups: list[str]


def grouped_features(backbone: Backbone, data: Path, split: str, cache: Path | None) -> GroupedFeatures:
    rows = [row for row in read_groups(data).values() if row["split"] == split]
    if not rows:
        raise DataError(f"{data / 'groups.csv'} lists no photo of the {split} split")
    names = class_names(backbone.head_weight.shape[0])
    feats = extract_features(backbone, [data / row["file"] for row in rows], cache_dir=cache)
    if len(feats.paths) != len(rows):
        raise DataError(f"unreadable photos in {data / split}: {feats.problems[:3]}")
    return GroupedFeatures(
        [row["file"] for row in rows],
        feats.pooled,
        feats.logits,
        torch.tensor([names.index(row["class"]) for row in rows]),
        [row["group"] for row in rows],
    )


def object_cells_logits(backbone: Backbone, data: Path, split: str, cache: Path | None) -> torch.Tensor:
    """Reference, not a method (it needs every photo's mask): the model's own head applied to its features
    pooled over the object's cells only (cells less than half background), per photo of ``split`` in
    groups.csv's order. Whether the features hold what it takes to ignore the background."""
    rows = [row for row in read_groups(data).values() if row["split"] == split]
    feats = extract_features(backbone, [data / row["file"] for row in rows], cache_dir=cache)
    background = torch.from_numpy(np.stack([~read_object_mask(data, row["file"]) for row in rows])).float()
    on_object = F.interpolate(background[:, None], size=feats.feats.shape[1:3], mode="area")[:, 0] < 0.5
    keep = on_object.unsqueeze(-1).to(feats.feats)
    pooled = (feats.feats * keep).sum(dim=(1, 2)) / keep.sum(dim=(1, 2)).clamp_min(1)
    return pooled @ backbone.head_weight.float().T + backbone.head_bias.float()
