"""The registry of backbones: each family registers itself in its own module, and a name's prefix is parsed here.

Two kinds of entries, both registered where they are defined (as timm's ``register_model`` does):

- a *named* backbone of the menu (``register_backbone``: ``efficientnet_lite0``, ``resnet50``, ...), built from
  its weights alone;
- a *prefix* (``register_prefix``: ``timm:``, ``probe:``, ``parts_net:``) whose builder takes the rest of the
  name (a timm model, a probe folder, a PartsNet file).

Layers, with no import cycle (none at function level either)::

    base  <-  registry  <-  timm_models, torchvision_models, parts_net  <-  probe_models  <-  loader, download

A family is registered when its module is imported; ``loader`` imports them all, and the package imports
``loader``, so every entry is there as soon as ``protolib.backbones`` is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

from .base import Backbone, BackboneError, resolve_device

DEFAULT_BACKBONE = "efficientnet_lite0"

#: weights (None: pretrained, "random", or a file) -> a backbone on the CPU
NamedBuilder = Callable[[str | None], Backbone]
#: (the name without its prefix, weights) -> a backbone on the CPU
PrefixBuilder = Callable[[str, str | None], Backbone]
Named = TypeVar("Named", bound=NamedBuilder)
Prefixed = TypeVar("Prefixed", bound=PrefixBuilder)


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone of the menu, and whether its pretrained weights are on this machine."""

    name: str
    description: str
    build: NamedBuilder
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


@dataclass(frozen=True)
class _Prefix:
    build: PrefixBuilder
    #: how the name is written, for the unknown-name error (None: such names are made by commands, not typed)
    usage: str | None


_NAMED: dict[str, BackboneSpec] = {}
_PREFIXES: dict[str, _Prefix] = {}


def register_backbone(
    name: str, description: str, *, locate: Callable[[], Path | None], hint: Callable[[], str], embedded: bool = False
) -> Callable[[Named], Named]:
    """Decorator: ``build(weights)`` makes the named backbone ``name`` of the menu."""

    def register(build: Named) -> Named:
        if name in _NAMED or ":" in name:
            raise ValueError(f"backbone name {name!r} is taken or holds a ':' (kept for prefixes)")
        _NAMED[name] = BackboneSpec(name, description, build, locate, hint, embedded)
        return build

    return register


def register_prefix(prefix: str, usage: str | None = None) -> Callable[[Prefixed], Prefixed]:
    """Decorator: ``build(rest, weights)`` makes every backbone named ``<prefix><rest>`` (``prefix`` ends in ':')."""

    def register(build: Prefixed) -> Prefixed:
        if not prefix.endswith(":") or prefix.count(":") != 1 or prefix in _PREFIXES:
            raise ValueError(f"backbone prefix {prefix!r} is taken or is not '<word>:'")
        _PREFIXES[prefix] = _Prefix(build, usage)
        return build

    return register


def split_name(name: str) -> tuple[str, str]:
    """A backbone name as (its registered prefix, the rest): ``"timm:resnet50"`` -> ``("timm:", "resnet50")``.

    A name with no registered prefix is ``("", name)`` (a named backbone, or an unknown one). The one place
    where a name's prefix is read.
    """
    head, colon, rest = name.partition(":")
    prefix = head + colon
    return (prefix, rest) if prefix in _PREFIXES else ("", name)


def available_backbones() -> list[BackboneSpec]:
    """Named backbones, the embedded ones (ready offline, the default first) first; any timm model is also
    available as ``timm:<name>``.

    ``spec.ready()`` tells those whose pretrained weights are on this machine from those that need
    weights (``spec.weights_hint`` says how to supply them).
    """
    specs = sorted(_NAMED.values(), key=lambda spec: not spec.embedded)  # stable: each family's own order
    assert specs[0].name == DEFAULT_BACKBONE, "the default backbone heads the menu"
    return specs


def backbone_spec(name: str) -> BackboneSpec:
    if name not in _NAMED:
        names = ", ".join(spec.name for spec in available_backbones())
        usages = "".join(f" or {entry.usage}" for entry in _PREFIXES.values() if entry.usage)
        raise BackboneError(f"unknown backbone {name!r}; choose one of {names}{usages}")
    return _NAMED[name]


def load_registered(name: str, weights: str | None = None, device: str | torch.device = "cpu") -> Backbone:
    """Any registered backbone, named or prefixed, on ``device`` (checked before any weights are read)."""
    device = resolve_device(device)
    prefix, rest = split_name(name)
    backbone = _PREFIXES[prefix].build(rest, weights) if prefix else backbone_spec(name).build(weights)
    return backbone.to(device)
