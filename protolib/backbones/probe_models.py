"""Linear probes: a frozen backbone's spatial features with a linear head fit on a labelled folder.

A probe turns any feature extractor into a model of the form the method decomposes exactly,
``logit(x) = mean_hw(f(x)_hw) . W^T + b``: a registry backbone on data it was not trained for, or
VGG, whose own head is an MLP (VGG is offered *only* through a probe). The probe folder holds the
head and a manifest naming the backbone's weights; ``load_backbone("probe:<folder>")`` rebuilds
the probed model, so a run made from it reloads like any other (``probe:`` is registered here).
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision import models
from torchvision.models.vgg import cfgs, make_layers

from ..files import ManifestError, atomic_dir, read_manifest
from .base import (
    Backbone,
    BackboneError,
    Preprocessing,
    WeightsMissing,
    load_state,
    load_weights_file,
    resolve_device,
    weights_fingerprint,
    weights_source,
)
from .registry import load_registered, register_prefix, split_name
from .torchvision_models import pretrained_file, pretrained_hint, weights_preprocessing

PROBE_FORMAT = "protoscope.probe/1"
PROBE_MANIFEST, PROBE_HEAD = "probe.json", "head.safetensors"
PREFIX = "probe:"
#: feature extractors with no linear head of their own: usable only under a probe
PROBE_ONLY = {"vgg16": "VGG-16 conv features (torchvision)", "vgg19": "VGG-19 conv features (torchvision)"}


class ConvTrunk(nn.Module):
    """Spatial features of a model whose own head cannot be decomposed (VGG: an MLP).

    It quacks like a :class:`Backbone` for feature extraction (name, preprocessing, fingerprint,
    ``forward`` -> (features, logits)) but has no logits: they come back with 0 columns.
    """

    note = ""

    def __init__(self, name: str, features: nn.Module, preprocessing: Preprocessing, weights_source: str | None = None) -> None:
        super().__init__()
        self.name, self.model, self.preprocessing = name, features.eval(), preprocessing
        self.weights_source = weights_source  # as Backbone.weights_source

    @cached_property
    def fingerprint(self) -> str:
        """The same weights hash as every backbone."""
        return weights_fingerprint(self.name, self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def head_logits(self, spatial: torch.Tensor) -> torch.Tensor:
        return spatial.new_zeros(len(spatial), 0)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spatial = self.spatial_features(x)
        return spatial.permute(0, 2, 3, 1), self.head_logits(spatial)


def build_vgg(name: str, weights: str | None = None) -> ConvTrunk:
    """VGG's ``features`` (conv stack up to its last max-pool: 512 x 7 x 7 at 224 px, after ReLU).

    Only the conv weights are built and loaded: the 120M-parameter MLP head is never allocated.
    Pretrained weights come from the torch hub cache (never downloaded), a user's file, or are
    random (``"random"``, for tests).
    """
    default = models.get_model_weights(name).DEFAULT
    features = make_layers(cfgs["D" if name == "vgg16" else "E"], batch_norm=False)
    if weights != "random":
        source = Path(weights) if weights else pretrained_file(name)
        if weights is None and not source.is_file():
            raise WeightsMissing(f"pretrained weights for {name} are not on this machine: {pretrained_hint(name)}")
        state = load_weights_file(source)
        if any(k.startswith("features.") for k in state):  # a whole VGG checkpoint: keep its conv part
            state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        load_state(features, state, str(source))
    return ConvTrunk(name, features, weights_preprocessing(default), weights_source(weights))


def load_trunk(name: str, weights: str | None = None, device: str | torch.device = "cpu") -> Backbone | ConvTrunk:
    """The frozen feature extractor a probe is fit on: a registered backbone, or a probe-only model."""
    if split_name(name)[0] == PREFIX:
        raise BackboneError("a probe cannot be fit on another probe: name the backbone it was fit on")
    if name not in PROBE_ONLY:
        return load_registered(name, weights, device)
    device = resolve_device(device)
    return build_vgg(name, weights).to(device)


class ProbeBackbone(Backbone):
    """A frozen trunk's spatial features with a probe's linear head on their average pool.

    Labels are the probe's class names; ``wnids`` are its class folders, so an image folder with
    the same class folders maps onto the probe's classes by folder name.
    """

    def __init__(self, name: str, trunk: Backbone | ConvTrunk, head: nn.Linear, class_names: list[str], folders: list[str]) -> None:
        super().__init__(name, nn.ModuleDict({"trunk": trunk, "head": head}), trunk.preprocessing, class_names, folders)
        self.note = trunk.note

    @property
    def head(self) -> nn.Linear:
        head = self.model.get_submodule("head")
        assert isinstance(head, nn.Linear)
        return head

    @property
    def trunk(self) -> Backbone | ConvTrunk:
        trunk = self.model.get_submodule("trunk")
        assert isinstance(trunk, Backbone | ConvTrunk)
        return trunk

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.spatial_features(x)

    def head_logits(self, spatial: torch.Tensor) -> torch.Tensor:
        return self.head(spatial.mean(dim=(2, 3)))

    @cached_property
    def manifest(self) -> dict:
        return read_probe_manifest(Path(split_name(self.name)[1]))


def probe_name(folder: str | Path) -> str:
    """The backbone name of a probe folder, as runs record it (absolute, so it reloads from anywhere)."""
    return PREFIX + str(Path(folder).resolve())


def probe_folder(name: str) -> Path | None:
    """The folder of backbone ``probe:<folder>``; None for any other name."""
    prefix, rest = split_name(name)
    return Path(rest) if prefix == PREFIX else None


def write_probe(folder: str | Path, head: nn.Linear, manifest: dict, overwrite: bool = False) -> Path:
    """Write a probe folder atomically: the head (safetensors) and its manifest (JSON)."""
    folder = Path(folder)
    with atomic_dir(folder, overwrite=overwrite, marker=PROBE_MANIFEST) as tmp:
        tensors = {"weight": head.weight.detach().cpu().contiguous(), "bias": head.bias.detach().cpu().contiguous()}
        save_file(tensors, str(tmp / PROBE_HEAD))
        (tmp / PROBE_MANIFEST).write_text(json.dumps(dict(manifest, format=PROBE_FORMAT), indent=2))
    return folder


def read_probe_manifest(folder: Path) -> dict:
    if not (folder / PROBE_MANIFEST).is_file():
        raise BackboneError(f"{folder} is not a probe folder (no {PROBE_MANIFEST}); fit one with `python -m protolib probe`")
    try:
        return read_manifest(folder / PROBE_MANIFEST, PROBE_FORMAT)
    except ManifestError as exc:
        raise BackboneError(f"damaged probe: {exc}") from exc


@register_prefix(PREFIX)
def build_probe(folder: str | Path, weights: str | None = None, device: str | torch.device = "cpu") -> ProbeBackbone:
    """Rebuild a saved probe; refused when its backbone's weights are no longer the ones it was fit on."""
    if weights is not None:
        raise BackboneError("a probe names its own backbone weights (see its probe.json); do not pass --weights")
    folder = Path(folder)
    manifest = read_probe_manifest(folder)
    try:
        state = load_file(str(folder / PROBE_HEAD))
        weight, bias = state["weight"], state["bias"]
    except Exception as exc:
        raise BackboneError(f"{folder / PROBE_HEAD}: missing or damaged probe head ({exc})") from exc
    classes = manifest["classes"]
    if weight.ndim != 2 or weight.shape[0] != len(classes) or bias.shape != (len(classes),):
        raise BackboneError(f"{folder}: a head of shape {tuple(weight.shape)} for {len(classes)} classes")
    trunk = load_trunk(manifest["backbone"], manifest.get("weights"), device)
    if trunk.fingerprint != manifest["fingerprint"]:
        raise BackboneError(
            f"{folder} was fit on {manifest['backbone']} with weights {manifest['fingerprint']}, but these weights "
            f"are {trunk.fingerprint}: fit the probe again"
        )
    head = nn.Linear(weight.shape[1], weight.shape[0])
    head.load_state_dict({"weight": weight, "bias": bias})
    probe = ProbeBackbone(probe_name(folder), trunk, head, [c["name"] for c in classes], [c["folder"] for c in classes])
    return probe.to(trunk.device)
