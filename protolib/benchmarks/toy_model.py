"""Training PartsNet (``backbones/parts_net.py``), the small CNN of the generated benchmarks, and keeping it:
``reuse_or_train`` trains a benchmark's model once under its protocol and reuses it while the protocol holds.

Two idle CPU cores train one epoch of 6 x 150 images in a few seconds; shared cores are slower.
Training can stop on a validation-accuracy target (``target_accuracy``): the parts benchmark's
protocol (``parts.BenchConfig``) uses class labels only to decide when to stop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..backbones.parts_net import MEAN, STD, PartsNet, PartsNetBackbone, build_parts_net, save_parts_net
from ..data.synthetic import PartsSample

DEFAULT_EPOCHS = 5


def to_input(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 RGB images (N, H, W, 3) -> normalised float tensor (N, 3, H, W), as the model was trained."""
    x = torch.from_numpy(np.stack(list(images))).permute(0, 3, 1, 2).float().div_(255)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips and quarter turns per image: exact label-preserving symmetries of the data."""
    flip, turns = torch.rand(len(x), generator=generator) < 0.5, torch.randint(0, 4, (len(x),), generator=generator)
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    for k in (1, 2, 3):
        x[turns == k] = torch.rot90(x[turns == k], k, dims=(2, 3))
    return x


@torch.no_grad()
def accuracy(model: PartsNet, samples: Sequence[PartsSample], batch_size: int = 128) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on ``samples``."""
    model.eval()
    correct = 0
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        pred = model(to_input([s.image for s in batch])).argmax(1)
        correct += int((pred == torch.tensor([s.label for s in batch])).sum())
    return correct / max(1, len(samples))


def train_parts_net(
    train_samples: Sequence[PartsSample],
    val_samples: Sequence[PartsSample],
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    progress: Callable[[int, int, float, float | None], None] | None = None,
    batch_size: int = 32,
    lr: float = 3e-3,
    target_accuracy: float | None = None,
) -> tuple[PartsNet, float]:
    """Train a PartsNet on CPU and return (model in eval mode, val accuracy after the last epoch).

    ``target_accuracy``: stop after the first epoch whose val accuracy (class labels only) is at
    least this; ``epochs`` is then the maximum, and also the length the one-cycle learning-rate
    schedule is planned for, so the schedule does not depend on when training stops. Without it,
    exactly ``epochs`` epochs are trained.

    Deterministic for a seed as far as torch's CPU kernels are. The global RNG is left untouched
    (initialisation runs in a forked RNG, shuffling and augmentation use their own generator), and
    so is the global thread count. ``progress(epoch, epochs, mean train loss, val accuracy)`` is
    called after each epoch. It gets a val accuracy on every epoch when ``target_accuracy`` is set
    (the rule needs it), otherwise only on the last epoch, so that other epochs pay nothing for it.
    """
    num_classes = max(s.label for s in list(train_samples) + list(val_samples)) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PartsNet(num_classes)
    generator = torch.Generator().manual_seed(seed)
    images = to_input([s.image for s in train_samples])
    labels = torch.tensor([s.label for s in train_samples])
    steps = epochs * -(-len(images) // batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=max(1, steps), pct_start=0.2)
    for epoch in range(epochs):
        model.train()
        order, total = torch.randperm(len(images), generator=generator), 0.0
        for start in range(0, len(images), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(_augment(images[idx], generator)), labels[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(idx)
        last = epoch == epochs - 1
        val_accuracy = accuracy(model, val_samples) if last or target_accuracy is not None else None
        if progress is not None:
            progress(epoch + 1, epochs, total / len(images), val_accuracy)
        if target_accuracy is not None and val_accuracy is not None and val_accuracy >= target_accuracy:
            break
    model.eval()
    return model, accuracy(model, val_samples)


def reuse_or_train(
    out: Path, key: str, spec: dict, labels: list[str], size: int, train: Callable[[], tuple[PartsNet, dict]]
) -> tuple[PartsNetBackbone, dict]:
    """A benchmark's PartsNet as the backbone ``parts_net:<out>/parts_net.safetensors``, which runs record and
    the app reloads: the model saved there when its sidecar records ``spec`` (the data and the training
    protocol) under ``key``, else a new one, ``train()`` -> (model, what to record of its training), saved with
    ``{key: spec, "training": that record + train_seconds}``. Returns (backbone, that record with ``reused``;
    ``train_seconds`` is 0 for a reused model whose sidecar does not record it)."""
    path = Path(out) / "parts_net.safetensors"
    sidecar = path.with_suffix(".json")
    if path.is_file() and sidecar.is_file():
        meta = json.loads(sidecar.read_text())
        if meta.get(key) == spec:
            training = meta["training"]
            return build_parts_net(path), {**training, "train_seconds": training.get("train_seconds", 0.0), "reused": True}
    started = time.perf_counter()
    model, training = train()
    training = {**training, "train_seconds": round(time.perf_counter() - started, 2)}
    save_parts_net(model, path, labels, size, {key: spec, "training": training})
    return build_parts_net(path), {**training, "reused": False}
