"""Batched feature extraction with a disk cache, so that a second run never reruns the backbone."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from .. import config
from ..backbones import Backbone
from ..files import atomic_path
from .folders import BadImage, Problem, load_image

#: progress(stage, done, total): how every long step reports (the CLI draws bars, the app widgets)
Progress = Callable[[str, int, int], None]


@dataclass
class Features:
    """Backbone outputs of a list of images: those that could be read, in order."""

    paths: list[str]
    feats: torch.Tensor  # (N, H, W, D) float32, the spatial features the head pools
    logits: torch.Tensor  # (N, C) the model's own logits
    problems: list[Problem] = field(default_factory=list)

    @property
    def pooled(self) -> torch.Tensor:
        return self.feats.mean(dim=(1, 2))


class _Images(Dataset):
    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return self.transform(load_image(self.paths[i])), i, ""
        except BadImage as exc:
            return None, i, str(exc)


def _collate(batch):
    good = [(x, i) for x, i, _ in batch if x is not None]
    bad = [(i, err) for x, i, err in batch if x is None]
    images = torch.stack([x for x, _ in good]) if good else None
    return images, [i for _, i in good], bad


def cache_key(backbone: Backbone, paths: list[Path]) -> str:
    """Weights, preprocessing and the exact files (path, size, mtime) decide the cache entry."""
    digest = hashlib.sha256()
    digest.update(f"{backbone.name}|{backbone.fingerprint}|{backbone.preprocessing}".encode())
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def extract_features(
    backbone: Backbone,
    paths: list[Path],
    batch_size: int = 32,
    num_workers: int | None = None,
    cache_dir: Path | bool | None = None,
    progress: Progress | None = None,
    stage: str = "features",
) -> Features:
    """Run the backbone over ``paths`` on its device; unreadable images are reported, not fatal.

    ``cache_dir``: None for the default cache, False to disable it.
    """
    paths = [Path(p) for p in paths]
    cache_file = None
    if cache_dir is not False:
        cache_file = Path(cache_dir or config.cache_dir()) / f"{cache_key(backbone, paths)}.safetensors"
        if cache_file.is_file():
            cached = _read_cache(cache_file)
            if cached is not None:
                if progress:
                    progress(stage, len(paths), len(paths))
                return cached
    if num_workers is None:  # workers pay off only once there is enough to decode
        num_workers = min(4, os.cpu_count() or 1) if len(paths) >= 64 else 0
    loader = DataLoader(
        _Images(paths, backbone.preprocessing.transform()),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=backbone.device.type == "cuda",
    )
    feats, logits, kept, problems, done = [], [], [], [], 0
    for images, indices, bad in loader:
        problems += [Problem(str(paths[i]), err.split(": ", 1)[-1]) for i, err in bad]
        if images is not None:
            f, z = backbone(images.to(backbone.device, non_blocking=True))
            feats.append(f.float().cpu())
            logits.append(z.float().cpu())
            kept += indices
        done += len(indices) + len(bad)
        if progress:
            progress(stage, done, len(paths))
    if not kept:
        raise BadImage(f"none of the {len(paths)} images could be read" + (f" (first: {problems[0]})" if problems else ""))
    result = Features([str(paths[i]) for i in kept], torch.cat(feats), torch.cat(logits), problems)
    if cache_file is not None:
        write_cache(cache_file, result)
    return result


def write_cache(path: Path, features: Features) -> None:
    meta = {"paths": json.dumps(features.paths), "problems": json.dumps([[p.path, p.reason] for p in features.problems])}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"feats": features.feats.contiguous(), "logits": features.logits.contiguous()}, str(tmp), metadata=meta)


def _read_cache(path: Path) -> Features | None:
    """A cached entry, or None when it is unreadable (it is then recomputed and rewritten)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        tensors = load_file(str(path))
        problems = [Problem(p, r) for p, r in json.loads(meta["problems"])]
        return Features(json.loads(meta["paths"]), tensors["feats"], tensors["logits"], problems)
    except Exception:  # a damaged cache file must never break a run
        return None
