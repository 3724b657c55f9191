"""``load_backbone``: the one entry point for every backbone name (named, ``timm:<name>``, ``probe:<folder>``,
``parts_net:<file>``).

Importing the family modules registers them (see registry.py); this is the module that imports them all.
"""

from __future__ import annotations

import torch

from . import parts_net, timm_models, torchvision_models  # noqa: F401  (imported to register their backbones)
from .base import Backbone, BackboneError
from .probe_models import PROBE_ONLY
from .registry import DEFAULT_BACKBONE, load_registered


def load_backbone(name: str = DEFAULT_BACKBONE, weights: str | None = None, device: str | torch.device = "cpu") -> Backbone:
    """Build a backbone by name (``probe:<folder>`` rebuilds a saved linear probe, ``parts_net:<file>`` a
    saved PartsNet of the generated benchmarks).

    ``weights``: None for the pretrained weights (embedded, or from the local torch/timm cache),
    a file path (safetensors or a torch checkpoint, loaded with ``weights_only=True``), or
    ``"random"`` for a randomly initialised model (tests, no download).
    """
    if name in PROBE_ONLY:
        raise BackboneError(
            f"unknown backbone {name!r} as a classifier: its head is an MLP, which the method cannot decompose; "
            f"fit a linear probe on its conv features (`python -m protolib probe --backbone {name}`)"
        )
    return load_registered(name, weights, device)
