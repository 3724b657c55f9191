"""The pictures a report shows: which held-out images (round-robin over the classes), passed through the
backbone once more, and encoded as small base64 PNGs for the page."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

from ..backbones import Backbone
from ..evaluation.metrics import SplitFeatures
from ..explain import model_input


def png(image: np.ndarray, size: int = 128) -> str:
    """An RGB uint8 image as base64 PNG, downsized for the page."""
    buffer = io.BytesIO()
    Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def spread(sf: SplitFeatures, n: int) -> list[int]:
    """Indices of n held-out images taken round-robin over the classes (so every class is seen)."""
    by_class = [(sf.labels == label).nonzero().flatten().tolist() for label in sf.labels.unique().tolist()]
    picked: list[int] = []
    rank = 0
    while len(picked) < n and any(rank < len(members) for members in by_class):
        picked += [members[rank] for members in by_class if rank < len(members)]
        rank += 1
    return picked[:n]


def forward(backbone: Backbone, path: str) -> tuple[torch.Tensor, np.ndarray, torch.Tensor, torch.Tensor]:
    """One image through the backbone: (model input, the picture as the model sees it, feature grid, logits)."""
    x, shown = model_input(backbone, path)
    feats, logits = backbone(x.to(backbone.device))
    return x, shown, feats[0].float().cpu(), logits[0].float().cpu()
