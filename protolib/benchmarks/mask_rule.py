"""The mask rule: which prototypes lie on the background, read on the object masks of a few photos per class.

The shortcut benchmark's ``prototypes_by_mask`` repair, and what the app's "switch off every background
prototype" applies wherever a data folder has object masks (``data/synthetic_shortcut.py``'s layout).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..backbones import Backbone
from ..data import DataError, split_images
from ..data.features import CacheDir, extract_features
from ..data.synthetic_shortcut import mask_path, read_object_mask
from ..runs import Run


def mask_photos(run: Run, data: str | Path, split: str | None = None, per_class: int = 5) -> list[list[Path]]:
    """Per decomposed class of ``run`` (in its order), the first ``per_class`` photos of ``split`` (default:
    the split the run was decomposed on) that have an object mask (``data/masks/<split>/<class>/<name>``)."""
    data = Path(data)
    split = split or run.manifest.get("split", "train")
    photos = []
    for cls in run.manifest["classes"]:
        paths = [p for p in split_images(data, split, cls["folder"]) if mask_path(data, p.relative_to(data)).is_file()]
        if not paths:
            raise DataError(f"no photo of class {cls['folder']} in {data / split} has a mask under {data / 'masks'}")
        photos.append(paths[:per_class])
    return photos


def background_fractions(
    backbone: Backbone, run: Run, data: str | Path, split: str | None = None, per_class: int = 5, cache_dir: CacheDir = None
) -> torch.Tensor:
    """(C, k): per prototype of the run (its strategy's refined prototypes, without any saved edit), the
    fraction of the positive part of its heatmap ``f . p~`` (upsampled bilinearly to the photo) that lies on
    the background, summed over a few masked photos of its class (:func:`mask_photos`)."""
    data = Path(data)
    prototypes = run.refined_by_strategy[run.strategy]
    fractions = torch.zeros(prototypes.shape[:2])
    for c, paths in enumerate(mask_photos(run, data, split, per_class)):
        feats = extract_features(backbone, paths, cache_dir=cache_dir)
        background = torch.from_numpy(np.stack([~read_object_mask(data, Path(p).relative_to(data)) for p in feats.paths]))
        heat = torch.einsum("nhwd,kd->nkhw", feats.feats, prototypes[c].to(feats.feats))
        heat = F.interpolate(heat, size=background.shape[-2:], mode="bilinear", align_corners=False).clamp_min(0)
        total = heat.sum(dim=(0, 2, 3))
        on_background = (heat * background.unsqueeze(1).float()).sum(dim=(0, 2, 3))
        fractions[c] = torch.where(total > 0, on_background / total.clamp_min(1e-12), torch.zeros_like(total))
    return fractions


def mask_rule_scales(
    backbone: Backbone,
    run: Run,
    data: str | Path,
    split: str | None = None,
    per_class: int = 5,
    threshold: float = 0.5,
    cache_dir: CacheDir = None,
) -> torch.Tensor:
    """The edit of ``prototypes_by_mask``: (C, k) scales, 0 for every prototype whose positive heatmap
    mass lies mostly (> ``threshold``) on the background of a few masked photos of its class, 1 otherwise."""
    fractions = background_fractions(backbone, run, data, split, per_class, cache_dir)
    return (fractions <= threshold).float()
