"""Batched feature extraction with a disk cache (``feature_cache``), so that a second run never reruns the backbone;
one stream of images for many classes, so that a thousand small classes cost what one large one does.

The one home of feature extraction: the pipeline, the probe, the evaluation, the benchmarks and the app all read
features through ``stream_features`` (per class of a split: ``class_features``; a split gathered:
``split_features``)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .. import config
from ..backbones import Backbone
from ..backbones.base import Preprocessing
from . import feature_cache
from .folders import BadImage, ClassFolder, ImageSet, Problem, load_image, scan_split


class FeatureSource(Protocol):
    """What feature extraction reads of a model: a ``Backbone``, or a probe's frozen trunk (``ConvTrunk``, which
    has no head of its own)."""

    name: str
    preprocessing: Preprocessing

    @property
    def fingerprint(self) -> str: ...

    @property
    def device(self) -> torch.device: ...

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def head_logits(self, spatial: torch.Tensor) -> torch.Tensor: ...


#: progress(stage, done, total): how every long step reports (the CLI draws bars, the app widgets)
Progress = Callable[[str, int, int], None]
#: where features are cached: None for the default cache (``config.cache_dir``), False for none
CacheDir = Path | str | Literal[False] | None


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


#: one image as the loader yields it: (tensor, or None when unreadable; its index; the reason it is unreadable)
_Item = tuple[torch.Tensor | None, int, str]
#: one batch: (the readable images stacked, or None; their indices; (index, reason) of the unreadable ones)
_Batch = tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]


class _Images(Dataset):
    def __init__(self, paths: list[Path], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> _Item:
        try:
            return self.transform(load_image(self.paths[i])), i, ""
        except BadImage as exc:
            return None, i, str(exc)


def _collate(batch: list[_Item]) -> _Batch:
    good = [(x, i) for x, i, _ in batch if x is not None]
    bad = [(i, err) for x, i, err in batch if x is None]
    images = torch.stack([x for x, _ in good]) if good else None
    return images, [i for _, i in good], bad


def cache_key(backbone: FeatureSource, paths: Sequence[Path]) -> str:
    """Weights, preprocessing and the exact files (path, size, mtime) decide the cache entry."""
    digest = hashlib.sha256()
    digest.update(f"{backbone.name}|{backbone.fingerprint}|{backbone.preprocessing}".encode())
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


CPU_BATCH = 2


def workers_for(device: torch.device, images: int) -> int:
    """DataLoader workers, for the whole stream: on a GPU up to 8 decode ahead of it (from 64 images: for fewer,
    starting them costs more). On a CPU none: decoding and resizing a sample photo takes 1.7 ms against 52 ms
    for EfficientNet-Lite0's forward pass (one thread), so workers could gain 3 % at most, and on a shared
    machine they took cores from the model (a stream with one worker ran 0.8x of one without)."""
    if images < 64 or device.type != "cuda":
        return 0
    return min(8, os.cpu_count() or 1)


def batch_size_for(backbone: FeatureSource, free_bytes: int | None = None) -> int:
    """Images per batch. On a CPU 2: the work is memory-bound, and EfficientNet-Lite0 on one thread ran 35, 58, 49,
    37, 28 and 19 images/s at batch 1, 2, 4, 8, 16 and 32 on real sample photos (medians of 3 interleaved rounds;
    bench/RESULTS.md section 9). On a GPU, what half of its free memory holds at about 64 input-sized activations
    per image (``free_bytes``: the free memory, asked of the GPU when None), between 8 and 512."""
    if backbone.device.type != "cuda":
        return CPU_BATCH
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(backbone.device)[0]
    per_image = 3 * backbone.preprocessing.crop_size**2 * 4 * 64
    return int(max(8, min(512, free_bytes // 2 // per_image)))


def _forward(backbone: FeatureSource, images: torch.Tensor, mixed: bool, stored: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (B, H, W, D) float32, logits): the trunk under autocast when ``mixed``; the head always in
    float32 on the features exactly as they are kept (float16-rounded when ``stored``), so that the
    decomposition is exact with respect to the features it is given."""
    with torch.inference_mode():
        with torch.autocast(backbone.device.type, dtype=torch.float16, enabled=mixed):
            spatial = backbone.spatial_features(images)
        spatial = spatial.to(feature_cache.STORED).float() if stored else spatial.float()
        return spatial.permute(0, 2, 3, 1).cpu(), backbone.head_logits(spatial).float().cpu()


def stream_features(
    backbone: FeatureSource,
    groups: Sequence[Sequence[Path]],
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache_dir: CacheDir = None,
    progress: Progress | None = None,
    stage: str = "features",
    mixed_precision: bool | None = None,
) -> Iterator[Features | BadImage]:
    """Features of each group of images (a class's), in order: those in the cache are read, all the others are
    walked in ONE loader (its workers live for the whole stream, its batches span classes) and split per group
    afterwards, each written to the cache under the same key as on its own. A group with no readable image
    yields its ``BadImage`` instead.

    ``cache_dir``: None for the default cache, False to disable it (features then stay float32).
    ``batch_size``: None to fit the device (``batch_size_for``). ``mixed_precision``: autocast on a GPU
    (default there; never on a CPU).
    """
    groups = [[Path(p) for p in group] for group in groups]
    folder = None if cache_dir is False else Path(cache_dir or config.cache_dir())
    if folder:
        config.cache_limit_bytes()  # a malformed limit fails before any backbone time is spent
    # where each group's features are cached (None: no cache)
    entries: list[Path | None] = (
        [feature_cache.entry_path(folder, cache_key(backbone, group)) for group in groups] if folder else [None] * len(groups)
    )
    todo = {i for i, entry in enumerate(entries) if not (entry is not None and entry.is_file())}
    flat = [path for i in sorted(todo) for path in groups[i]]
    mixed = backbone.device.type == "cuda" if mixed_precision is None else mixed_precision and backbone.device.type == "cuda"
    num_workers = workers_for(backbone.device, len(flat)) if num_workers is None else num_workers
    batches: Iterator[_Batch] = (
        iter(
            DataLoader(
                _Images(flat, backbone.preprocessing.transform()),
                batch_size=batch_size or batch_size_for(backbone),
                num_workers=num_workers,
                collate_fn=_collate,
                pin_memory=backbone.device.type == "cuda",
            )
        )
        if flat
        else iter(())
    )
    total, done, walked, pulled = sum(map(len, groups)), 0, 0, 0
    rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # index in flat -> (features, logits)
    errors: dict[int, str] = {}
    for i, group in enumerate(groups):
        entry = entries[i]
        cached: Features | BadImage | None = _read_cache(entry) if entry is not None and i not in todo else None
        if cached is None and i not in todo:  # removed or damaged since the stream began: on its own
            cached = _one(backbone, group, batch_size, folder, mixed)
        if cached is None:
            start = walked
            while pulled < start + len(group):  # the loader keeps the order; a batch may run into the next group
                images, indices, bad = next(batches)
                pulled += len(indices) + len(bad)
                errors.update(bad)
                if images is not None:
                    f, z = _forward(backbone, images.to(backbone.device, non_blocking=True), mixed, folder is not None)
                    rows.update((j, (f[n], z[n])) for n, j in enumerate(indices))
                if progress:
                    progress(stage, done + min(pulled - start, len(group)), total)
            cached = _group(
                group,
                [rows.pop(j, None) for j in range(start, start + len(group))],
                [errors.pop(j, None) for j in range(start, start + len(group))],
            )
            walked += len(group)
            if entry is not None and isinstance(cached, Features):
                write_cache(entry, cached)
        done += len(group)
        if progress:
            progress(stage, done, total)
        yield cached


def _group(paths: Sequence[Path], outputs: list, errors: list) -> Features | BadImage:
    problems = [Problem(str(p), err.split(": ", 1)[-1]) for p, err in zip(paths, errors) if err is not None]
    kept = [(str(p), out) for p, out in zip(paths, outputs) if out is not None]
    if not kept:
        return BadImage(f"none of the {len(paths)} images could be read" + (f" (first: {problems[0]})" if problems else ""))
    return Features([p for p, _ in kept], torch.stack([f for _, (f, _) in kept]), torch.stack([z for _, (_, z) in kept]), problems)


def _one(
    backbone: FeatureSource, group: Sequence[Path], batch_size: int | None, folder: Path | None, mixed: bool
) -> Features | BadImage:
    return next(stream_features(backbone, [group], batch_size, 0, folder or False, mixed_precision=mixed))


def extract_features(
    backbone: FeatureSource,
    paths: list[Path],
    batch_size: int | None = None,
    num_workers: int | None = None,
    cache_dir: CacheDir = None,
    progress: Progress | None = None,
    stage: str = "features",
) -> Features:
    """Run the backbone over ``paths`` on its device; unreadable images are reported, not fatal (``BadImage``
    when none is readable). ``cache_dir``: None for the default cache, False to disable it."""
    result = next(stream_features(backbone, [paths], batch_size, num_workers, cache_dir, progress, stage))
    if isinstance(result, BadImage):
        raise result
    return result


def write_cache(path: Path, features: Features) -> None:
    meta = feature_cache.paths_meta(features.paths, [(p.path, p.reason) for p in features.problems])
    feature_cache.write_entry(path, features.feats, features.logits, meta)


def _read_cache(path: Path) -> Features | None:
    """A cached entry, or None when it is unreadable (it is then recomputed and rewritten)."""
    entry = feature_cache.read_entry(path)
    if entry is None:
        return None
    feats, logits, meta = entry
    try:
        problems = [Problem(p, r) for p, r in json.loads(meta["problems"])]
        return Features(json.loads(meta["paths"]), feats, logits, problems)
    except Exception:  # a damaged cache file must never break a run
        return None


def class_features(
    backbone: FeatureSource,
    images: ImageSet,
    cache_dir: CacheDir = None,
    progress: Progress | None = None,
    stage: str = "features",
    problems: list[Problem] | None = None,
) -> Iterator[tuple[ClassFolder, Features | BadImage]]:
    """Per class of a scanned split, in its order, (class, the features of its images): ONE stream for every
    class (a loader per class would cost more than its images at 4 per class), pulled lazily, so that a caller
    may hold one chunk of classes at a time. A class none of whose images can be read comes with its
    ``BadImage`` instead (the caller skips it or raises it); the unreadable images of the others are appended
    to ``problems``."""
    stream = stream_features(
        backbone, [images.images[cls.folder] for cls in images.classes], cache_dir=cache_dir, progress=progress, stage=stage
    )
    for cls, feats in zip(images.classes, stream):
        if problems is not None and isinstance(feats, Features):
            problems += feats.problems
        yield cls, feats


@dataclass
class SplitFeatures:
    """Backbone outputs of every image of a split, grouped by class (kept for fidelity)."""

    paths: list[str]
    labels: torch.Tensor  # (N,)
    pooled: torch.Tensor  # (N, D)
    logits: torch.Tensor  # (N, C) the model's own
    matrices: dict[int, torch.Tensor]  # label -> F (n*H*W, D) of that class's images, unclamped
    problems: list[Problem]


def split_features(
    backbone: Backbone,
    data: str | Path,
    split: str = "val",
    images_per_class: int | None = None,
    classes: list[str] | None = None,
    cache_dir: CacheDir = None,
    progress: Progress | None = None,
) -> SplitFeatures:
    """The features of ``data/split`` (``classes``: some class folders or names; ``images_per_class``: the first
    images of each), gathered over its classes; an unreadable class raises its ``BadImage``."""
    images = scan_split(data, split, backbone.class_names, backbone.wnids, classes, images_per_class)
    paths, labels, pooled, logits, matrices, problems = [], [], [], [], {}, list(images.problems)
    for cls, feats in class_features(backbone, images, cache_dir, progress, problems=problems):
        if isinstance(feats, BadImage):
            raise feats
        paths += feats.paths
        labels += [cls.label] * len(feats.paths)
        pooled.append(feats.pooled)
        logits.append(feats.logits)
        matrices[cls.label] = feats.feats.reshape(-1, feats.feats.shape[-1])  # unclamped, as the logit sees them
    return SplitFeatures(paths, torch.tensor(labels), torch.cat(pooled), torch.cat(logits), matrices, problems)
