"""A small CNN for the synthetic parts benchmark, in the shape the method needs.

``logit(x) = mean_hw(f(x)_hw) . W^T + b``: a conv trunk ends in a ReLU (non-negative features,
as NMF needs), then global average pooling, then ONE ``nn.Linear``. Nothing sits between the
pooling and the head, so the prototype decomposition is exact. At 112 px input the features are
(B, 128, 14, 14). Training can stop on a validation-accuracy target (``target_accuracy``): the
benchmark's protocol (``parts.BenchConfig``) uses class labels only to decide when to stop.
Two idle CPU cores train one epoch of 6 x 150 images in a few seconds; shared cores are slower.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.synthetic import PartsSample
from ..files import atomic_path

# Per-channel statistics of the synthetic images (measured on 600 of them). The model was trained on
# images normalised with these, so always preprocess with ``to_input``.
MEAN = (0.470, 0.463, 0.466)
STD = (0.149, 0.135, 0.145)
FEATURE_DIM = 128
DEFAULT_EPOCHS = 5
FORMAT = "protolib.parts_net/1"


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PartsNet(nn.Module):
    """Conv trunk (stride 8) -> ReLU features (B, D, S/8, S/8) -> global average pool -> Linear head."""

    def __init__(self, num_classes: int, width: int = 24, feature_dim: int = FEATURE_DIM):
        super().__init__()
        self.num_classes, self.width, self.feature_dim = num_classes, width, feature_dim
        # Downsample early (cheap on CPU); receptive field 39 px at the end, about two part diameters.
        self.features = nn.Sequential(
            _block(3, width, 2),
            _block(width, 2 * width, 2),
            _block(2 * width, 2 * width, 1),
            _block(2 * width, 4 * width, 2),
            _block(4 * width, feature_dim, 1),  # ends in ReLU: features >= 0
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, S, S) -> non-negative spatial features (B, D, S/8, S/8)."""
        return self.features(x)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        """Spatial features -> logits: global average pooling then the linear head, nothing else."""
        return self.head(f.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def config(self) -> dict:
        return {"num_classes": self.num_classes, "width": self.width, "feature_dim": self.feature_dim}


def to_input(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 RGB images (N, H, W, 3) -> normalised float tensor (N, 3, H, W), as the model was trained."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255)
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
        if target_accuracy is not None and val_accuracy >= target_accuracy:
            break
    model.eval()
    return model, accuracy(model, val_samples)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_parts_net(model: PartsNet, path: str | Path, metadata: dict | None = None) -> Path:
    """Save weights to ``path`` (safetensors) and the config to ``path`` with a .json suffix (both atomic)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, **model.config(), "mean": list(MEAN), "std": list(STD), **(metadata or {})}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    with atomic_path(_sidecar(path)) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    return path


def load_parts_net(path: str | Path) -> PartsNet:
    """Load a model saved by :func:`save_parts_net`, in eval mode on CPU."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = json.loads(_sidecar(path).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{_sidecar(path)} is not a {FORMAT} sidecar (format={meta.get('format')!r})")
    if tuple(meta["mean"]) != MEAN or tuple(meta["std"]) != STD:
        raise ValueError(f"{path} was trained with a different normalisation ({meta['mean']}, {meta['std']})")
    model = PartsNet(meta["num_classes"], meta["width"], meta["feature_dim"])
    model.load_state_dict(load_file(str(path)))
    return model.eval()
