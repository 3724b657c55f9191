"""What a prototype network shows a person: heatmaps, part maps and the explanation of one image.

Heatmaps are ``f(x) . p~_i`` on the feature grid, upsampled bilinearly to the image the model saw
(after its resize and crop); their spatial means are the contributions to the logit.

A run's edit in space (``method.spatial``) changes which cells are pooled before the head. An explanation
under it is of the edited model: its logits and contributions come from the mean over the kept cells, so
contributions + bias = logit still holds exactly; the heatmaps still describe every cell, and the cells left
out (whose share no longer counts) are drawn hatched (:func:`left_out_overlay`).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from .backbones import Backbone
from .data import BadImage, load_image
from .data.folders import size_problem
from .files import atomic_path
from .method.head import PrototypeHead
from .method.spatial import SpatialEdit, cells_left_out, pool_kept
from .palette import CORAL, PROBABILITY, prototype_colour, prototype_hex

#: the colour (RGB) of the hatching and outline of cells left out of the pooling
LEFT_OUT = tuple(int(CORAL[i : i + 2], 16) for i in (1, 3, 5))


def upsample(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(..., h, w) maps -> (..., H, W), bilinear."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    size = (size, size) if isinstance(size, int) else size
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*lead, *size)


def part_map(presence: torch.Tensor, image: np.ndarray, threshold: float = 0.3, opacity: float = 0.55) -> np.ndarray:
    """Colour each pixel by the part most present there.

    ``presence`` (k, H, W) at the image's size, from ``PrototypeHead.presence`` (1 = as strong
    as the part gets on the class's training images); pixels where even the strongest part is
    below ``threshold`` stay uncoloured (no part there).
    """
    winner = presence.argmax(dim=0).numpy()
    mask = (presence.max(dim=0).values > threshold).numpy()
    colours = np.array([prototype_colour(i) for i in range(presence.shape[0])], dtype=np.float32)
    out = image.astype(np.float32).copy()
    out[mask] = (1 - opacity) * out[mask] + opacity * colours[winner[mask]]
    return out.clip(0, 255).astype(np.uint8)


def heatmap_overlay(heatmap: torch.Tensor, image: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """One heatmap (H, W) over the image, with OpenCV's JET colours scaled to its own range.
    Negative evidence (below zero) is drawn dark, positive bright."""
    import cv2

    h = heatmap.numpy()
    span = max(abs(h.min()), abs(h.max()), 1e-12)
    scaled = ((h / span + 1) / 2 * 255).clip(0, 255).astype(np.uint8)
    coloured = cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return ((1 - opacity) * image + opacity * coloured).clip(0, 255).astype(np.uint8)


def left_out_overlay(image: np.ndarray, left_out: torch.Tensor) -> np.ndarray:
    """The image with the cells left out of the pooling (bool (h, w) on the feature grid) darkened, hatched
    and outlined in orange."""
    rows, cols = left_out.shape
    height, width = image.shape[:2]
    y = np.arange(height) * rows // height
    x = np.arange(width) * cols // width
    cell = left_out.numpy()[y][:, x]
    out = image.astype(np.float32).copy()
    out[cell] = 0.35 * out[cell] + 0.65 * np.array([30, 30, 30], np.float32)
    hatch = ((np.arange(height)[:, None] + np.arange(width)[None, :]) % 10 < 2) & cell
    out[hatch] = np.array(LEFT_OUT, np.float32)
    padded = np.pad(cell, 1, mode="edge")
    inside = padded[2:, 1:-1] & padded[:-2, 1:-1] & padded[1:-1, 2:] & padded[1:-1, :-2]
    out[cell & ~inside] = np.array(LEFT_OUT, np.float32)
    return out.clip(0, 255).astype(np.uint8)


@dataclass
class Explanation:
    """Everything shown for one image and one decomposed class."""

    image: np.ndarray  # (S, S, 3) uint8: the image as the model saw it
    label: int  # the explained class
    logits: torch.Tensor  # (C_all,)
    contributions: torch.Tensor  # (k,) to the explained class's logit
    bias: float
    heatmaps: torch.Tensor  # (k, S, S) contribution heatmaps f(x) . p~_i
    presence: torch.Tensor  # (k, S, S) part presence, 1 = strong (for part maps)
    spatial: SpatialEdit | None = None  # the edit in space explained with, if any
    left_out: torch.Tensor | None = None  # (h, w) bool on the feature grid: cells left out of the pooling
    kept_all: bool = False  # every cell would have been left out, so the photo kept them all

    def space_note(self, class_names: list[str]) -> str:
        """One line saying what the edit in space did to this photo ("" without an edit)."""
        if self.spatial is None or self.left_out is None:
            return ""
        n, cells = int(self.left_out.sum()), self.left_out.numel()
        kept = " (every cell would go, so the photo keeps them all)" if self.kept_all else ""
        return (
            f"Edit in space: {self.spatial.describe(class_names)}. Hatched: the {n} of {cells} cells left out{kept}; "
            "each contribution is the mean of its heatmap over the other cells."
        )

    @property
    def logit(self) -> float:
        return float(self.contributions.sum() + self.bias)

    def top(self, n: int = 5) -> list[tuple[int, float]]:
        """(label, probability) of the n most likely classes."""
        probs = self.logits.softmax(dim=0)
        values, labels = probs.topk(min(n, len(probs)))
        return list(zip(labels.tolist(), values.tolist()))


def model_input(backbone: Backbone, image: str | Path | Image.Image) -> tuple[torch.Tensor, np.ndarray]:
    """A path or PIL image -> (normalised batch of one, the uint8 image the model sees)."""
    if not isinstance(image, (str, Path)) and size_problem(*image.size):  # bounded before any resize asks for memory
        raise BadImage(f"the image: {size_problem(*image.size)}")
    pil = load_image(image) if isinstance(image, (str, Path)) else image.convert("RGB")
    x = backbone.preprocessing.transform()(pil).unsqueeze(0)
    shown = backbone.preprocessing.display_transform()(pil).permute(1, 2, 0).numpy()
    return x, shown


def explain_features(
    head: PrototypeHead, feats: torch.Tensor, image: np.ndarray, label: int | None = None, spatial: SpatialEdit | None = None
) -> Explanation:
    """Explain one image from its features (H, W, D); ``label`` defaults to the predicted
    class if it was decomposed, else the highest-scoring decomposed class. ``spatial``: the model's edit in
    space (the run's ``spatial_edit``), applied to the pooling before the head."""
    if spatial:
        mask = cells_left_out(head, feats.unsqueeze(0).float(), spatial)
        pooled, everything = pool_kept(feats.unsqueeze(0).float(), mask)
        left_out, kept_all = mask[0] & ~everything[0], bool(everything[0])
        contributions = head.contributions(pooled)
        logits = head.logits(pooled, contributions)
    else:
        logits, contributions = head(feats.unsqueeze(0))
        left_out, kept_all = None, False
    logits, contributions = logits[0], contributions[0]
    if label is None:
        decomposed = logits[head.classes]
        label = int(head.classes[decomposed.argmax()])
    position = head.position(label)
    maps = head.heatmaps(feats.unsqueeze(0), position)[0]
    return Explanation(
        image=image,
        label=label,
        logits=logits,
        contributions=contributions[position],
        bias=float(head.bias[label]),
        heatmaps=upsample(maps, image.shape[:2]),
        presence=upsample(head.presence(feats.unsqueeze(0), position)[0], image.shape[:2]),
        spatial=spatial or None,
        left_out=left_out,
        kept_all=kept_all,
    )


def explain_image(
    backbone: Backbone,
    head: PrototypeHead,
    image: str | Path | Image.Image,
    label: int | None = None,
    spatial: SpatialEdit | None = None,
) -> Explanation:
    """Run the backbone on one image (a path or PIL image) and explain it (under the edit in space ``spatial``)."""
    x, shown = model_input(backbone, image)
    feats, _ = backbone(x.to(backbone.device))
    return explain_features(head, feats[0].cpu(), shown, label, spatial)


def explanation_figure(explanation: Explanation, class_names: list[str], path: str | Path) -> Path:
    """A PNG: the image, its top-5 classes, the part map, and each prototype's heatmap with its
    contribution to the explained logit; under an edit in space, the cells left out are hatched on the image
    and the heatmaps, and a last line says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = explanation
    k = len(e.contributions)
    cols = max(3, k)
    fig, axes = plt.subplots(2, cols, figsize=(3.2 * cols, 6.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")

    def drawn(image: np.ndarray) -> np.ndarray:
        return image if e.left_out is None else left_out_overlay(image, e.left_out)

    axes[0, 0].imshow(drawn(e.image))
    axes[0, 0].set_title("image" if e.left_out is None else "image (hatched: left out)", fontsize=10)
    top = e.top(5)
    axes[0, 1].barh(range(len(top))[::-1], [p for _, p in top], color=PROBABILITY)
    axes[0, 1].set_yticks(range(len(top))[::-1], [class_names[i][:22] for i, _ in top], fontsize=8)
    axes[0, 1].set_xlim(0, 1)
    axes[0, 1].axis("on")
    axes[0, 1].set_title("top-5 probability", fontsize=10)
    axes[0, 2].imshow(part_map(e.presence, e.image))
    axes[0, 2].set_title(f"part map: {class_names[e.label][:24]}", fontsize=10)
    for i in range(k):
        ax = axes[1, i]
        ax.imshow(drawn(heatmap_overlay(e.heatmaps[i], e.image)))
        ax.set_title(f"prototype {i + 1}: {float(e.contributions[i]):+.2f}", fontsize=10, color=prototype_hex(i))
    fig.suptitle(
        f"{class_names[e.label]}: logit {e.logit:.2f} = "
        + " ".join(f"{float(c):+.2f}" for c in e.contributions)
        + f" (bias {e.bias:+.2f})"
        + (f"\n{textwrap.fill(e.space_note(class_names), 30 * cols)}" if e.spatial else ""),
        fontsize=11,
    )
    fig.tight_layout()
    path = Path(path)
    if not path.suffix:  # matplotlib would add ".png" and the caller would name a file that does not exist
        raise ValueError(f"{path}: name the image file with its extension (e.g. {path.name}.png)")
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".").lower())
    finally:
        plt.close(fig)
    return path
