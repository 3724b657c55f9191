"""``load_backbone``: the one entry point for every backbone name (registry, ``timm:<name>``, ``probe:<folder>``,
``parts_net:<file>``)."""

from __future__ import annotations

from .base import Backbone, BackboneError, resolve_device, weights_source
from .parts_net import PREFIX as PARTS_NET_PREFIX
from .parts_net import build_parts_net
from .probe_models import PREFIX as PROBE_PREFIX
from .probe_models import PROBE_ONLY, build_probe
from .registry import DEFAULT_BACKBONE, load_registered


def load_backbone(name: str = DEFAULT_BACKBONE, weights: str | None = None, device="cpu") -> Backbone:
    """Build a backbone by name (``probe:<folder>`` rebuilds a saved linear probe, ``parts_net:<file>`` a
    saved PartsNet of the generated benchmarks).

    ``weights``: None for the pretrained weights (embedded, or from the local torch/timm cache),
    a file path (safetensors or a torch checkpoint, loaded with ``weights_only=True``), or
    ``"random"`` for a randomly initialised model (tests, no download).
    """
    if name.startswith(PROBE_PREFIX):
        device = resolve_device(device)
        backbone = build_probe(name.removeprefix(PROBE_PREFIX), weights)
        backbone.weights_source = weights_source(weights)
        return backbone.to(device)
    if name.startswith(PARTS_NET_PREFIX):
        if weights is not None:
            raise BackboneError("a saved PartsNet is its own weights file; do not pass --weights")
        return build_parts_net(name.removeprefix(PARTS_NET_PREFIX), resolve_device(device))
    if name in PROBE_ONLY:
        raise BackboneError(
            f"unknown backbone {name!r} as a classifier: its head is an MLP, which the method cannot decompose; "
            f"fit a linear probe on its conv features (`python -m protolib probe --backbone {name}`)"
        )
    return load_registered(name, weights, device)
