"""torchvision classifiers: ResNet, DenseNet, EfficientNet (linear heads, exact) and ViT (patch mean), registered as
named backbones.

Each adapter returns the tensor the model's own head pools and applies the model's own pooling and
head modules to it, so exactness is checked against torchvision's code, not a copy of it.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from .base import (
    Backbone,
    Preprocessing,
    WeightsMissing,
    download_url,
    imagenet_class_names,
    load_state,
    load_weights_file,
    weights_source,
)
from .registry import register_backbone


class TorchvisionBackbone(Backbone):
    """A torchvision classifier; ``head_path`` names its linear head inside the model."""

    head_path: str

    @property
    def head(self) -> nn.Linear:
        head = self.model.get_submodule(self.head_path)
        assert isinstance(head, nn.Linear)
        return head

    @staticmethod
    def upgrade_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename keys of older checkpoints to the current layout (most families need nothing)."""
        return state


class ResNetBackbone(TorchvisionBackbone):
    head_path = "fc"

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        m: models.ResNet = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))

    def head_logits(self, spatial: torch.Tensor) -> torch.Tensor:
        m: models.ResNet = self.model
        return m.fc(torch.flatten(m.avgpool(spatial), 1))


# torchvision's published DenseNet files still use 'norm.1'-style keys (see torchvision's densenet.py).
_DENSENET_LEGACY_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class DenseNetBackbone(TorchvisionBackbone):
    head_path = "classifier"

    @staticmethod
    def upgrade_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {_DENSENET_LEGACY_KEY.sub(r"\1\2", key): value for key, value in state.items()}

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        m: models.DenseNet = self.model
        return F.relu(m.features(x))  # torchvision's forward applies this ReLU before pooling

    def head_logits(self, spatial: torch.Tensor) -> torch.Tensor:
        m: models.DenseNet = self.model
        return m.classifier(torch.flatten(F.adaptive_avg_pool2d(spatial, (1, 1)), 1))


class EfficientNetBackbone(TorchvisionBackbone):
    head_path = "classifier.1"  # classifier[0] is Dropout, the identity in eval mode

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        m: models.EfficientNet = self.model
        return m.features(x)

    def head_logits(self, spatial: torch.Tensor) -> torch.Tensor:
        m: models.EfficientNet = self.model
        return m.classifier(torch.flatten(m.avgpool(spatial), 1))


class ViTBackbone(TorchvisionBackbone):
    """ViT with the class token swapped for the mean of the patch tokens (as the paper does)."""

    head_path = "heads.head"

    def __init__(
        self,
        name: str,
        model: nn.Module,
        preprocessing: Preprocessing,
        class_names: list[str],
        wnids: list[str] | None = None,
        weights_source: str | None = None,
    ) -> None:
        super().__init__(name, model, preprocessing, class_names, wnids, weights_source)
        self.note = (
            f"{self.name} classifies here from the mean of its patch tokens instead of its class token, "
            "so its logits and accuracy differ from the original model's."
        )

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        m: models.VisionTransformer = self.model
        tokens = m._process_input(x)  # torchvision's own patchify; it insists on the trained image size
        tokens = m.encoder(torch.cat([m.class_token.expand(len(tokens), -1, -1), tokens], dim=1))[:, 1:]
        side = x.shape[-1] // m.patch_size
        return tokens.transpose(1, 2).reshape(len(x), m.hidden_dim, -1, side)

    def head_logits(self, spatial: torch.Tensor) -> torch.Tensor:
        m: models.VisionTransformer = self.model
        return m.heads(spatial.mean(dim=(2, 3)))


def weights_url(name: str) -> str:
    """The public URL of torchvision model ``name``'s default weights; its file name carries a sha256 prefix."""
    return models.get_model_weights(name).DEFAULT.url


def pretrained_file(name: str) -> Path:
    """Where torch.hub keeps (and where we look for) the default weights of torchvision model ``name``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_url(name)).name


def pretrained_hint(name: str) -> str:
    """How to supply the pretrained weights of torchvision model ``name``: the file, where from, where to."""
    file = Path(weights_url(name)).name
    return (
        f"download {download_url(weights_url(name), file)} and put it at {pretrained_file(name)} "
        "(the torch hub cache), or let protoscope fetch it (--download, or Download weights in the app), "
        "or pass your own checkpoint with --weights FILE"
    )


def weights_preprocessing(weights: models.WeightsEnum) -> Preprocessing:
    preset = weights.transforms()
    return Preprocessing(
        crop_size=preset.crop_size[0],
        resize_size=preset.resize_size[0],
        mean=tuple(preset.mean),
        std=tuple(preset.std),
        interpolation=preset.interpolation.value,
    )


def build(adapter: type[TorchvisionBackbone], name: str, weights: str | None = None) -> Backbone:
    """A torchvision model with pretrained weights from the hub cache (None), random ones, or a user's file.

    Never downloads (``download.fetch_weights`` does, with consent): a missing pretrained file is an error that
    says what to fetch, from where, and where to put it.
    """
    default = models.get_model_weights(name).DEFAULT
    state = None
    source: Path | str
    if weights is None:
        source = pretrained_file(name)
        if not source.is_file():
            raise WeightsMissing(f"pretrained weights for {name} are not on this machine: {pretrained_hint(name)}")
        state = load_weights_file(source)
    elif weights != "random":
        source = weights
        state = load_weights_file(source)
    num_classes = 1000
    if state is not None:
        state = adapter.upgrade_keys(state)
        head = state.get(f"{adapter.head_path}.weight")
        if head is not None and head.ndim == 2:  # a fine-tuned checkpoint keeps its own classes
            num_classes = head.shape[0]
    model = models.get_model(name, weights=None, num_classes=num_classes)
    if state is not None:
        load_state(model, state, str(source))
    names, wnids = imagenet_class_names() if num_classes == 1000 else ([f"class {i}" for i in range(num_classes)], None)
    return adapter(name, model, weights_preprocessing(default), names, wnids, weights_source(weights))


_FAMILIES: list[tuple[type[TorchvisionBackbone], str, list[str]]] = [
    (ResNetBackbone, "ResNet-{}", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]),
    (DenseNetBackbone, "DenseNet-{}", ["densenet121", "densenet161"]),
    (EfficientNetBackbone, "EfficientNet-{}", ["efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3"]),
    (ViTBackbone, "ViT-{} (patch-token mean, changes accuracy)", ["vit_b_16", "vit_b_32"]),
]


def _title(name: str) -> str:
    """resnet50 -> 50, efficientnet_b0 -> B0, vit_b_16 -> B/16."""
    return re.sub(r"^[a-z]+_?", "", name).upper().replace("_", "/")


SPECS = [
    (name, f"{title.format(_title(name))}, ImageNet (torchvision)", partial(build, adapter, name))
    for adapter, title, names in _FAMILIES
    for name in names
]


def _register_families() -> None:
    """Each model above as a named backbone of the menu, in this order."""
    for name, description, build_model in SPECS:
        register = register_backbone(name, description, locate=partial(pretrained_file, name), hint=partial(pretrained_hint, name))
        register(build_model)


_register_families()
