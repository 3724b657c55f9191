"""Faithfulness of prototype explanations: the explainability axioms checked numerically, Grad-CAM,
and deletion / insertion curves (Petsiuk et al., RISE, BMVC 2018).

The axioms are properties of the prototype head itself, so they are checked on pooled features of
real images, with no backbone pass. Deletion and insertion do need the backbone: they change pixels
in the order a saliency map ranks them and watch the class probability fall (deletion: a faithful
map makes it fall fast, low AUC is good) or rise (insertion: high AUC is good).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..backbones import Backbone
from ..method.head import PrototypeHead

COMPLETENESS_TOL = 1e-4


# -- the axioms --------------------------------------------------------------------------------
def check_axioms(head: PrototypeHead, pooled: torch.Tensor, model_logits: torch.Tensor, tol: float = COMPLETENESS_TOL) -> dict:
    """Completeness, linearity, sensitivity and symmetry of ``head`` on real pooled features (N, D).

    Each entry reports its max error and whether it is within ``tol``. Errors are absolute logit
    errors (completeness, sensitivity, symmetry) or relative to the size of the contributions
    (linearity, whose combinations can be large).
    """
    pooled = pooled.float()
    contributions = head.contributions(pooled)  # (N, C, k)
    bias = head.bias[head.classes]
    # completeness: contributions + bias give the *model's own* logit of every decomposed class
    completeness = (contributions.sum(-1) + bias - model_logits[:, head.classes]).abs().max()

    # linearity: the contributions of a combination of two images' features are the same combination
    other = pooled.roll(1, dims=0)
    linearity = torch.tensor(0.0)
    for a, b in ((0.3, 0.7), (2.0, -1.0)):
        mixed = head.contributions(a * pooled + b * other)
        expected = a * contributions + b * contributions.roll(1, dims=0)
        linearity = torch.maximum(linearity, (mixed - expected).abs().max() / max(1.0, float(expected.abs().max())))

    # sensitivity: switching one prototype off moves its class's logit by exactly its contribution
    logits = head.logits(pooled, contributions)
    sensitivity = torch.tensor(0.0)
    C, k = contributions.shape[1:]
    for i in range(k):
        scale = torch.ones(C, k)
        scale[:, i] = 0
        change = logits[:, head.classes] - head.logits(pooled, contributions, scale)[:, head.classes]
        sensitivity = torch.maximum(sensitivity, (change - contributions[:, :, i]).abs().max())
    # ... and a prototype that contributes nothing (a zero vector added to every class) changes nothing
    with_null = PrototypeHead(
        head.weight, head.bias, head.classes, torch.cat([head.refined_prototypes, head.refined_prototypes[:, :1] * 0], 1)
    )
    null_logits, null_contrib = with_null(pooled)
    scale = torch.ones(C, k + 1)
    scale[:, k] = 0
    null_effect = torch.maximum(
        (null_logits - logits).abs().max(), (with_null.logits(pooled, null_contrib, scale) - null_logits).abs().max()
    )

    # symmetry: split prototype 1 of every class into two equal halves; both halves must get the same credit
    half = head.refined_prototypes[:, :1] / 2
    split = PrototypeHead(head.weight, head.bias, head.classes, torch.cat([half, half, head.refined_prototypes[:, 1:]], 1))
    split_logits, split_contrib = split(pooled)
    symmetry = torch.maximum((split_contrib[:, :, 0] - split_contrib[:, :, 1]).abs().max(), (split_logits - logits).abs().max())

    def entry(error: torch.Tensor, meaning: str) -> dict:
        return {"max_error": float(error), "passed": bool(float(error) <= tol), "meaning": meaning}

    return {
        "tolerance": tol,
        "n_images": len(pooled),
        "completeness": entry(completeness, "sum of contributions + bias = the model's own logit"),
        "linearity": entry(linearity, "contributions of a mix of two images' features = the same mix of their contributions"),
        "sensitivity": entry(sensitivity, "zeroing a prototype changes the logit by exactly its contribution"),
        "null_prototype": entry(null_effect, "a prototype that contributes nothing changes nothing, on or off"),
        "symmetry": entry(symmetry, "two identical prototypes (one split in halves) receive identical contributions"),
    }


# -- Grad-CAM ----------------------------------------------------------------------------------
def grad_cam(backbone: Backbone, spatial: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) on the features the head pools: (B, D, h, w) -> (B, h, w).

    Generic: the gradient of the target logit through the model's own head, channel weights its
    spatial mean, then ReLU of the weighted sum. For a linear head on average-pooled features the
    gradient is v_c / hw everywhere, so Grad-CAM equals CAM = ReLU(f . v_c) / hw.
    """
    with torch.enable_grad():
        spatial = spatial.detach().float().clone().requires_grad_(True)  # a normal tensor, even from inference mode
        logits = backbone.head_logits(spatial)
        target = logits.gather(1, labels.view(-1, 1).to(logits.device)).sum()
        (grad,) = torch.autograd.grad(target, spatial)
    weights = grad.mean(dim=(2, 3), keepdim=True)
    return F.relu((weights * spatial.detach()).sum(dim=1))


# -- deletion / insertion ------------------------------------------------------------------------
def blurred(x: torch.Tensor, kernel: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Gaussian blur of a batch (B, 3, S, S): the insertion baseline RISE uses."""
    r = torch.arange(kernel, dtype=x.dtype) - kernel // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = (g / g.sum()).to(x.device)
    channels = x.shape[1]
    x = F.conv2d(F.pad(x, (kernel // 2,) * 4, mode="reflect"), g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(x, g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def auc(curve: torch.Tensor) -> float:
    """Area under a curve sampled at evenly spaced fractions of 0..1 (trapezoid rule)."""
    return float(torch.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


@dataclass
class Curves:
    fractions: list[float]
    deletion: torch.Tensor  # (steps + 1,) class probability as the most salient pixels are removed
    insertion: torch.Tensor  # (steps + 1,) ... as they are restored onto a blurred image


@torch.inference_mode()
def deletion_insertion(
    backbone: Backbone, x: torch.Tensor, label: int, saliencies: dict[str, torch.Tensor], steps: int = 8
) -> dict[str, Curves]:
    """Deletion and insertion curves of one image (1, 3, S, S) for several saliency maps (h, w) each.

    Pixels are ranked by the bilinearly upsampled map (ties keep raster order); at step t the top
    t/steps of them are deleted (set to 0 in normalised space: the dataset's mean colour) or
    inserted (copied from the image onto its blur). The first and last images are the same for
    every map, so they are computed once. All images of one curve go through the model in one batch.
    """
    x = x.to(backbone.device)
    size = x.shape[-2:]
    n = size[0] * size[1]
    base_delete, base_insert = torch.zeros_like(x), blurred(x)
    counts = [round(n * t / steps) for t in range(steps + 1)]
    batch_del, batch_ins = [x, base_delete], [base_insert, x]
    for saliency in saliencies.values():
        up = F.interpolate(saliency.float().view(1, 1, *saliency.shape), size=size, mode="bilinear", align_corners=False)
        order = up.flatten().argsort(descending=True, stable=True).to(x.device)
        for count in counts[1:-1]:
            mask = torch.zeros(n, device=x.device)
            mask[order[:count]] = 1
            mask = mask.view(1, 1, *size)
            batch_del.append(x * (1 - mask) + base_delete * mask)
            batch_ins.append(base_insert * (1 - mask) + x * mask)

    def probabilities(images: list[torch.Tensor]) -> torch.Tensor:
        _, logits = backbone(torch.cat(images))
        return logits.float().softmax(dim=1)[:, label].cpu()

    p_del, p_ins = probabilities(batch_del), probabilities(batch_ins)
    result, inner = {}, steps - 1
    for j, name in enumerate(saliencies):
        middle = slice(2 + j * inner, 2 + (j + 1) * inner)
        result[name] = Curves(
            [c / n for c in counts],
            torch.cat([p_del[:1], p_del[middle], p_del[1:2]]),
            torch.cat([p_ins[:1], p_ins[middle], p_ins[1:2]]),
        )
    return result
