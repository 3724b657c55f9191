"""PartsNet: the small CNN of the generated benchmarks, saved as a file and loaded by name.

``logit(x) = mean_hw(f(x)_hw) . W^T + b``: a conv trunk ends in a ReLU (non-negative features, as NMF
needs), then global average pooling, then ONE ``nn.Linear``, so the decomposition is exact. At 112 px
the features are (B, 128, 14, 14). A trained model is a safetensors file with a JSON sidecar (its
config, normalisation, input size and class names); ``load_backbone("parts_net:<file>")`` rebuilds it,
so a run decomposed from it reloads in the app like any other. Training lives with the benchmarks
(``benchmarks/toy_model.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..files import atomic_path
from .base import Backbone, BackboneError, Preprocessing
from .registry import register_prefix

PREFIX = "parts_net:"
# Per-channel statistics of the generated images (measured on 600 of them). The model is trained on
# images normalised with these.
MEAN = (0.470, 0.463, 0.466)
STD = (0.149, 0.135, 0.145)
FEATURE_DIM = 128
FORMAT = "protolib.parts_net/1"
DEFAULT_SIZE = 112


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PartsNet(nn.Module):
    """Conv trunk (stride 8) -> ReLU features (B, D, S/8, S/8) -> global average pool -> Linear head."""

    def __init__(self, num_classes: int, width: int = 24, feature_dim: int = FEATURE_DIM) -> None:
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


class PartsNetBackbone(Backbone):
    """PartsNet as a backbone: spatial = ``forward_features``, head = its Linear, its own normalisation.
    ``labels`` name the classes and are also their folder names (generated data maps by name)."""

    model: PartsNet

    def __init__(self, model: PartsNet, size: int, class_names: list[str], name: str = "parts_net") -> None:
        preprocessing = Preprocessing(crop_size=size, resize_size=size, mean=MEAN, std=STD)
        super().__init__(name, model, preprocessing, class_names, wnids=class_names)

    @property
    def head(self) -> nn.Linear:
        return self.model.head

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def head_logits(self, spatial: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(spatial)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_parts_net(
    model: PartsNet, path: str | Path, labels: list[str], size: int = DEFAULT_SIZE, metadata: dict | None = None
) -> Path:
    """Save weights to ``path`` (safetensors) and the config, input size and class names to ``path`` with a
    .json suffix (both atomic)."""
    path = Path(path)
    if len(labels) != model.num_classes:
        raise ValueError(f"{len(labels)} class names for a model of {model.num_classes} classes")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT,
        **model.config(),
        "mean": list(MEAN),
        "std": list(STD),
        "size": size,
        "labels": list(labels),
        **(metadata or {}),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    with atomic_path(_sidecar(path)) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))
    return path


def read_sidecar(path: str | Path) -> dict:
    """The JSON beside a saved PartsNet, checked: its format and its normalisation."""
    sidecar = _sidecar(Path(path))
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise BackboneError(f"{sidecar}: missing or damaged PartsNet sidecar ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BackboneError(f"{sidecar} is not a {FORMAT} sidecar")
    if tuple(meta.get("mean", ())) != MEAN or tuple(meta.get("std", ())) != STD:
        raise BackboneError(f"{path} was trained with another normalisation ({meta.get('mean')}, {meta.get('std')})")
    return meta


def load_parts_net(path: str | Path, meta: dict | None = None) -> PartsNet:
    """Load a model saved by :func:`save_parts_net`, in eval mode on CPU (``meta``: its sidecar, when read)."""
    meta = meta or read_sidecar(path)
    try:
        model = PartsNet(meta["num_classes"], meta["width"], meta["feature_dim"])
        model.load_state_dict(load_file(str(path)))
    except Exception as exc:  # safetensors' own error, a wrong shape or key, a missing file
        raise BackboneError(f"{path}: not a PartsNet that matches its sidecar ({exc})") from exc
    return model.eval()


def parts_net_name(path: str | Path) -> str:
    """The backbone name of a saved PartsNet, as runs record it (absolute, so it reloads from anywhere)."""
    return PREFIX + str(Path(path).resolve())


def build_parts_net(path: str | Path, device: str | torch.device = "cpu") -> PartsNetBackbone:
    """``load_backbone("parts_net:<path>")``: the saved model as a backbone named by its file."""
    meta = read_sidecar(path)
    model = load_parts_net(path, meta)
    labels = meta.get("labels") or [f"class {i}" for i in range(model.num_classes)]
    return PartsNetBackbone(model, int(meta.get("size", DEFAULT_SIZE)), labels, parts_net_name(path)).to(device)


@register_prefix(PREFIX)
def _build_named(path: str, weights: str | None) -> PartsNetBackbone:
    if weights is not None:
        raise BackboneError("a saved PartsNet is its own weights file; do not pass --weights")
    return build_parts_net(path)
