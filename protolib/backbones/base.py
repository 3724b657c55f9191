"""The adapter contract every backbone fulfils, and what the adapters share.

The method needs a classifier of the form ``logit(x) = mean_hw(f(x)_hw) . W^T + b``. A
:class:`Backbone` exposes exactly that split: ``forward`` returns the spatial features
``f(x)`` as (B, H, W, D) together with the logits computed by the model's *own* head modules
from those features, so that exactness is always checked against the model, not against our
re-implementation of it.
"""

from __future__ import annotations

import csv
import hashlib
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2 as T

from .. import config
from ..config import IMAGENET_CLASSES


class BackboneError(ValueError):
    """A backbone cannot be built or used; the message says what to do."""


class WeightsMissing(BackboneError):
    """Pretrained weights are not on this machine."""


class UnsupportedModel(BackboneError):
    """The model's logits are not a linear head on average-pooled spatial features."""


@dataclass(frozen=True)
class Preprocessing:
    """The image transform that belongs to a set of weights (it travels with them)."""

    crop_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"

    def transform(self) -> T.Compose:
        """PIL RGB image -> normalised float tensor (3, crop, crop)."""
        mode = T.InterpolationMode(self.interpolation)
        return T.Compose(
            [
                T.ToImage(),
                T.Resize(self.resize_size, interpolation=mode, antialias=True),
                T.CenterCrop(self.crop_size),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(self.mean, self.std),
            ]
        )

    def normalize(self, picture: Image.Image) -> torch.Tensor:
        """A PIL RGB image already at the model's size -> normalised float tensor (3, H, W), with no
        resize or crop (for images whose geometry the caller set, e.g. to carry keypoints with it)."""
        pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255).permute(2, 0, 1)
        return (pixels - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)

    def display_transform(self) -> T.Compose:
        """The same geometry without normalisation: what the model sees, for overlays."""
        mode = T.InterpolationMode(self.interpolation)
        return T.Compose(
            [T.ToImage(), T.Resize(self.resize_size, interpolation=mode, antialias=True), T.CenterCrop(self.crop_size)]
        )


def imagenet_class_names() -> tuple[list[str], list[str]]:
    """(readable names, wnids) of the ImageNet-1k label space, shipped with the package."""
    with open(IMAGENET_CLASSES, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["imagenet_index"]))
    return [r["name"] for r in rows], [r["wnid"] for r in rows]


def weights_fingerprint(name: str, model: nn.Module) -> str:
    """A stable hash of a model's weights (names, shapes and values), short enough to show."""
    digest = hashlib.sha256(name.encode())
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class Backbone(nn.Module, ABC):
    """A classifier split into spatial features and a linear head.

    Subclasses implement ``spatial_features`` (the features the head pools, as B, D, H, W) and
    ``head_logits`` (the model's own pooling and head applied to them) and expose ``head``, the
    ``nn.Linear`` whose rows are the class vectors ``v_c``.
    """

    #: Set when the adapted model's logits differ from the original model's (ViT: patch mean).
    note: str = ""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        preprocessing: Preprocessing,
        class_names: list[str],
        wnids: list[str] | None = None,
        weights_source: str | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        #: what ``load_backbone`` was given as weights, as ``weights_source()`` records it (None: the pretrained
        #: default); kept in runs, so that a run can reload the very model it was made from
        self.weights_source = weights_source
        self.model = model.eval()
        self.preprocessing = preprocessing
        self.class_names = list(class_names)
        self.wnids = list(wnids) if wnids is not None else None
        if len(self.class_names) != self.head.out_features:
            raise BackboneError(f"{name}: {len(self.class_names)} class names for a head of {self.head.out_features} classes")

    # -- what each adapter provides ------------------------------------------------------------
    @property
    @abstractmethod
    def head(self) -> nn.Linear:
        """The linear layer whose rows are the class vectors."""

    @abstractmethod
    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the spatial features the head pools, (B, D, H, W)."""

    @abstractmethod
    def head_logits(self, spatial: torch.Tensor) -> torch.Tensor:
        """The model's own pooling and head applied to ``spatial_features``."""

    # -- shared --------------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, S, S) -> (features (B, H, W, D), logits (B, C) from the model's head)."""
        spatial = self.spatial_features(x)
        return spatial.permute(0, 2, 3, 1), self.head_logits(spatial)

    @property
    def head_weight(self) -> torch.Tensor:
        return self.head.weight.detach()

    @property
    def head_bias(self) -> torch.Tensor:
        bias = self.head.bias
        return bias.detach() if bias is not None else torch.zeros(self.head.out_features, device=self.head.weight.device)

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @cached_property
    def fingerprint(self) -> str:
        """A stable hash of the weights (names, shapes and values), short enough to show."""
        return weights_fingerprint(self.name, self.model)

    def check_linear_head(self, atol: float = 1e-3) -> None:
        """Refuse a model whose head is not linear on mean-pooled features (one probe forward)."""
        x = torch.randn(2, 3, self.preprocessing.crop_size, self.preprocessing.crop_size, device=self.device)
        feats, logits = self(x)
        if feats.shape[-1] != self.head.in_features:  # a layer between features and head (MobileNetV3's conv_head)
            gap = float("inf")
        else:
            linear = feats.mean(dim=(1, 2)) @ self.head_weight.T + self.head_bias
            gap = (linear - logits).abs().max().item()
        if gap > atol * max(1.0, logits.abs().max().item()):
            raise UnsupportedModel(
                f"{self.name}: its logits are not a linear head on average-pooled features "
                f"(max gap {gap:.3g}); the method cannot decompose it exactly. "
                "Fit a linear probe on its pooled features instead (`python -m protolib probe`)."
            )


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA when there is one; a device that is not there, or not a device, is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise BackboneError(f"unknown device {str(device)!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if not count:
            raise BackboneError(f"--device {device} was asked for, but this machine has no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= count:
            raise BackboneError(f"--device {device} was asked for, but this machine's CUDA GPUs are cuda:0..cuda:{count - 1}")
    elif device.type != "cpu":
        raise BackboneError(f"device {str(device)!r} is not supported: use auto, cpu, cuda or cuda:N")
    return device


def download_url(public_url: str, mirror_name: str) -> str:
    """Where a pretrained file is fetched from: ``$PROTOLIB_WEIGHTS_MIRROR/<mirror_name>`` when a mirror is set
    (organisations mirror model files), else its public host."""
    mirror = config.weights_mirror()
    return f"{mirror}/{mirror_name}" if mirror else public_url


def weights_source(weights: str | Path | None) -> str | None:
    """What runs record of ``load_backbone``'s weights: None (pretrained), "random", or an absolute path."""
    return weights if weights in (None, "random") else str(Path(weights).resolve())


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a user's file: safetensors, or a torch checkpoint loaded safely."""
    path = Path(path)
    if not path.is_file():
        raise WeightsMissing(f"weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise BackboneError(f"weights file {path} is empty")
    state: object  # whatever the file holds, checked below
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # not a pickle of tensors at all
            raise BackboneError(f"{path} is not a weights file this project can read (safetensors or a torch state dict)") from exc
        # weights_only refused an object, and it is never retried unsafely
        raise BackboneError(
            f"{path} holds Python objects besides tensors, which are not loaded (they could run code); "
            "save the model's state_dict() with torch.save or safetensors and pass that file"
        ) from exc
    except Exception as exc:  # corrupt files raise many kinds of errors, with messages meant for torch's developers
        raise BackboneError(f"{path} is not a weights file this project can read (safetensors or a torch state dict)") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{path} does not hold a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    broken = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise BackboneError(f"{path}: {len(broken)} tensors hold NaN or infinite values (e.g. {broken[0]}); refused")
    return state


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict strictly, with an error that names what does not match."""
    own = model.state_dict()
    # BatchNorm counters are absent from checkpoints older than PyTorch 0.4.1 (torchvision's DenseNets);
    # load_state_dict fills them in, and they do not affect inference.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"shape mismatch: {'; '.join(wrong[:3])}")
        raise BackboneError(f"checkpoint {source} does not match the model: " + "; ".join(parts))
    model.load_state_dict(state)
