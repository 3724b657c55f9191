"""Backbones: a registry of supported classifiers behind one adapter contract (see base.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .base import Backbone, BackboneError, Preprocessing, UnsupportedModel, WeightsMissing, load_weights_file
from .probe_models import PREFIX as PROBE_PREFIX
from .probe_models import PROBE_ONLY, build_probe
from .timm_models import build_lite0, build_timm

DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    description: str
    build: Callable[[str | None], Backbone]


def _registry() -> dict[str, BackboneSpec]:
    from .torchvision_models import SPECS as TORCHVISION

    specs = [BackboneSpec(DEFAULT_BACKBONE, "EfficientNet-Lite0, ImageNet (embedded weights)", build_lite0)]
    specs += [BackboneSpec(name, description, build) for name, description, build in TORCHVISION]
    return {spec.name: spec for spec in specs}


def available_backbones() -> list[BackboneSpec]:
    """Named backbones; any timm model is also available as ``timm:<name>``."""
    return list(_registry().values())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when there is one; asking for CUDA without one is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackboneError("--device cuda was asked for, but this machine has no CUDA GPU; use --device cpu")
    return device


def load_backbone(name: str = DEFAULT_BACKBONE, weights: str | None = None, device="cpu") -> Backbone:
    """Build a backbone by name (``probe:<folder>`` rebuilds a saved linear probe).

    ``weights``: None for the pretrained weights (embedded, or from the local torch/timm cache),
    a file path (safetensors or a torch checkpoint, loaded with ``weights_only=True``), or
    ``"random"`` for a randomly initialised model (tests, no download).
    """
    if name.startswith("timm:"):
        backbone = build_timm(name.removeprefix("timm:"), weights)
    elif name.startswith(PROBE_PREFIX):
        backbone = build_probe(name.removeprefix(PROBE_PREFIX), weights)
    else:
        registry = _registry()
        if name in PROBE_ONLY:
            raise BackboneError(
                f"unknown backbone {name!r} as a classifier: its head is an MLP, which the method cannot decompose; "
                f"fit a linear probe on its conv features (`python -m protolib probe --backbone {name}`)"
            )
        if name not in registry:
            raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(registry)} or timm:<model name>")
        backbone = registry[name].build(weights)
    # kept in runs, so that a run can reload the very model it was made from
    backbone.weights_source = weights if weights in (None, "random") else str(Path(weights).resolve())
    return backbone.to(resolve_device(device))


__all__ = [
    "DEFAULT_BACKBONE",
    "Backbone",
    "BackboneError",
    "BackboneSpec",
    "Preprocessing",
    "UnsupportedModel",
    "WeightsMissing",
    "available_backbones",
    "load_backbone",
    "load_weights_file",
    "resolve_device",
]
