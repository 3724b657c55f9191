"""Fit a linear probe: multinomial logistic regression on a frozen backbone's average-pooled features.

The probe makes a model for data the backbone was not trained on (or for VGG, whose MLP head the
method cannot decompose): ``logit(x) = mean_hw(f(x)_hw) . W^T + b`` by construction, so the
decomposition of a probed model is exact. Saved as a folder (see ``backbones/probe_models.py``)
and used as the backbone ``probe:<folder>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import config
from .backbones import Backbone, BackboneError, resolve_device
from .backbones.probe_models import ConvTrunk, ProbeBackbone, load_trunk, probe_name, write_probe
from .data import BadImage, DataError, ImageSet, Problem, available_splits, read_class_map, scan_split, split_dir
from .data.features import CacheDir, Features, Progress, cache_key, class_features, write_cache
from .runs.schema import library_versions

DEFAULT_L2 = 1e-3  # on standardised features with a mean loss: sklearn's C=1 for about 1000 images
HOLDOUT = 5  # without a validation split, every 5th training image of a class is held out


@dataclass
class Probe:
    """A fitted probe head and its manifest; ``features`` keeps what was extracted (for the cache)."""

    head: nn.Linear
    manifest: dict
    trunk: Backbone | ConvTrunk = field(repr=False)
    features: dict[str, dict[str, Features]] = field(default_factory=dict, repr=False)  # split -> folder -> Features

    @property
    def val_accuracy(self) -> float:
        return self.manifest["val_accuracy"]

    def save(self, folder: str | Path, overwrite: bool = False, cache_dir: str | Path | None = None) -> Path:
        """Write the probe folder; then seed the feature cache of the probed model with the features
        already extracted, so that decomposing or evaluating the same images costs no second backbone pass."""
        if self.manifest["weights"] == "random":
            raise BackboneError(
                "a probe on random weights could never be rebuilt: save the backbone's weights to a file and fit "
                "the probe with --weights FILE"
            )
        folder = write_probe(folder, self.head, self.manifest, overwrite=overwrite)
        if cache_dir is not False and self.features:
            classes = self.manifest["classes"]
            head = nn.Linear(self.head.in_features, self.head.out_features).to(self.trunk.device)
            head.load_state_dict(self.head.state_dict())
            # the model build_probe(folder) rebuilds, without loading the backbone's weights a second time
            probed = ProbeBackbone(
                probe_name(folder), self.trunk, head, [c["name"] for c in classes], [c["folder"] for c in classes]
            )
            root = Path(cache_dir or config.cache_dir())
            for per_class in self.features.values():
                for feats in per_class.values():
                    _seed_cache(probed, feats, root)
        return folder


def _seed_cache(probed: Backbone, feats: Features, root: Path) -> None:
    paths = [Path(p) for p in feats.paths]
    if feats.problems:  # the cache key covers every requested file; with skipped files it cannot be rebuilt
        return
    with torch.inference_mode():
        spatial = feats.feats.to(probed.device).permute(0, 3, 1, 2)
        logits = probed.head_logits(spatial).float().cpu()
    write_cache(root / f"{cache_key(probed, paths)}.safetensors", Features(feats.paths, feats.feats, logits, []))


def class_names(root: Path, folders: list[str]) -> list[str]:
    """Readable names: ``root/classes.csv``'s name column where it lists a folder, else the folder name."""
    class_map = read_class_map(root) or {}
    return [class_map[f][1] if f in class_map else f for f in folders]


def _split_images(
    data: Path, split: str, val_split: str | None, limit: int | None, val_limit: int | None
) -> tuple[ImageSet, ImageSet | None, list[str], list[str]]:
    """(train ImageSet, val ImageSet or None when held out of train, class folders, class names)."""
    folder_root = split_dir(data, split)
    if not folder_root.is_dir():
        raise DataError(f"{folder_root} does not exist (expected DIR/{split}/<class folder>/<images> or DIR/<class folder>/)")
    folders = sorted(p.name for p in folder_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise DataError(f"{folder_root} needs at least 2 class folders to fit a probe, found {len(folders)}")
    names = class_names(data, folders)
    train = scan_split(data, split, names, folders, limit=limit)  # folders as wnids: they map by name
    missing = sorted(set(folders) - {c.folder for c in train.classes})
    if missing:
        raise DataError(f"class folders of {folder_root} without images: {', '.join(missing)}")
    has_val = val_split and val_split in available_splits(data)
    val = scan_split(data, val_split, names, folders, limit=val_limit) if val_split and has_val else None
    return train, val, folders, names


def _pooled(
    trunk: Backbone | ConvTrunk, images: ImageSet, cache_dir: CacheDir, progress: Progress | None, stage: str
) -> tuple[dict[str, Features], list[Problem]]:
    per_class, problems = {}, list(images.problems)
    # a ConvTrunk is a FeatureSource (data.features): feature extraction reads nothing else of a model
    for cls, feats in class_features(trunk, images, cache_dir, progress, stage, problems):
        if isinstance(feats, BadImage):
            raise feats
        per_class[cls.folder] = feats
    return per_class, problems


def _stack(
    per_class: dict[str, Features], label_of: dict[str, int], keep: Callable[[int], bool] = lambda i: True
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for folder, feats in per_class.items():
        rows = [i for i in range(len(feats.paths)) if keep(i)]
        xs.append(feats.pooled[rows])
        ys += [label_of[folder]] * len(rows)
    return torch.cat(xs), torch.tensor(ys)


def fit_linear_head(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = DEFAULT_L2, max_iter: int = 500) -> nn.Linear:
    """Multinomial logistic regression by full-batch L-BFGS, on the device of ``x``.

    Features are standardised for the solver's sake and the standardisation is folded back into
    the head, so the returned layer applies to the raw pooled features (the model stays linear).
    """
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0, got {l2}")
    x = x.double()
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    z = (x - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=x.dtype, device=x.device, requires_grad=True)
    solver = torch.optim.LBFGS(
        [weight, bias], lr=1, max_iter=max_iter, history_size=20, tolerance_grad=1e-7, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        solver.zero_grad()
        loss = F.cross_entropy(z @ weight.T + bias, y.to(x.device)) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    solver.step(closure)
    head = nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        raw = weight.detach() / std
        head.weight.copy_(raw.float())
        head.bias.copy_((bias.detach() - raw @ mean).float())
    return head


def _accuracy(head: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    if not len(y):
        return float("nan")
    with torch.no_grad():
        return float((head(x.to(head.weight.device)).argmax(dim=1).cpu() == y).float().mean())


def fit_probe(
    data: str | Path,
    backbone: str | Backbone | ConvTrunk = "efficientnet_lite0",
    weights: str | None = None,
    split: str = "train",
    val_split: str | None = "val",
    images_per_class: int | None = None,
    val_images_per_class: int | None = None,
    l2: float = DEFAULT_L2,
    device: str | torch.device = "cpu",
    cache_dir: CacheDir = None,
    progress: Progress | None = None,
) -> Probe:
    """Fit a probe on ``data/split`` (one class per folder) and measure it on ``data/val_split``.

    ``backbone``: a registry name (``vgg16``/``vgg19`` too, which only probes offer), with ``weights``
    as for ``load_backbone``, or an already loaded backbone. A probe must be rebuilt from its manifest,
    so its backbone's weights must be reproducible: pretrained, or a file (not ``"random"``).

    Without that split, every 5th training image of each class is held out for the accuracy figure.
    Features go through the shared disk cache, keyed by the backbone, so a folder already
    decomposed with that backbone costs no backbone time.
    """
    started = time.perf_counter()
    data = Path(data)
    trunk = load_trunk(backbone, weights, device) if isinstance(backbone, str) else backbone
    if isinstance(trunk, ProbeBackbone):
        raise ValueError("a probe cannot be fit on another probe: pass the backbone it was fit on")
    train, val, folders, names = _split_images(data, split, val_split, images_per_class, val_images_per_class)
    label_of = {folder: i for i, folder in enumerate(folders)}
    features: dict[str, dict[str, Features]] = {}
    features[split], problems = _pooled(trunk, train, cache_dir, progress, "features")
    if val is not None and val_split:  # val is only scanned for a named split
        features[val_split], val_problems = _pooled(trunk, val, cache_dir, progress, "features (val)")
        problems += val_problems
        x, y = _stack(features[split], label_of)
        xv, yv = _stack(features[val_split], label_of)
        validation = f"{val_split} split"
    else:
        x, y = _stack(features[split], label_of, keep=lambda i: i % HOLDOUT != HOLDOUT - 1)
        xv, yv = _stack(features[split], label_of, keep=lambda i: i % HOLDOUT == HOLDOUT - 1)
        validation = f"every {HOLDOUT}th image of {split} held out"
    if len(yv) == 0:
        raise DataError(f"no validation images: add {data / (val_split or 'val')} or more images per class")
    run_device = resolve_device(device)
    head = fit_linear_head(x.to(run_device), y, len(folders), l2)
    counts = {folder: len(feats.paths) for folder, feats in features[split].items()}
    manifest = {
        "backbone": trunk.name,
        "weights": trunk.weights_source,
        "fingerprint": trunk.fingerprint,
        "feature_dim": x.shape[1],
        "classes": [{"folder": f, "name": n, "n_train": counts[f]} for f, n in zip(folders, names, strict=True)],
        "data": str(data.resolve()),
        "split": split,
        "validation": validation,
        "images_per_class": images_per_class,
        "l2": l2,
        "n_train": len(y),
        "n_val": len(yv),
        "train_accuracy": _accuracy(head, x, y),
        "val_accuracy": _accuracy(head, xv, yv),
        "problems": [[p.path, p.reason] for p in problems],
        "seconds": round(time.perf_counter() - started, 2),
        "versions": library_versions(),
    }
    return Probe(head.cpu(), manifest, trunk, features)
