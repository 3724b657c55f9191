"""Backbones: a registry of supported classifiers behind one adapter contract (see base.py).

This module only re-exports (importing ``loader`` registers every family); the layers (no import cycle) and
how a family registers itself are described in registry.py.
"""

from __future__ import annotations

from .base import (
    Backbone,
    BackboneError,
    Preprocessing,
    UnsupportedModel,
    WeightsMissing,
    load_weights_file,
    resolve_device,
)
from .loader import load_backbone
from .registry import DEFAULT_BACKBONE, BackboneSpec, available_backbones, backbone_spec

__all__ = [
    "DEFAULT_BACKBONE",
    "Backbone",
    "BackboneError",
    "BackboneSpec",
    "Preprocessing",
    "UnsupportedModel",
    "WeightsMissing",
    "available_backbones",
    "backbone_spec",
    "load_backbone",
    "load_weights_file",
    "resolve_device",
]
