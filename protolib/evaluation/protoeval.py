"""Part consistency and stability of prototypes: the ProtoEval protocol (Huang et al. 2023).

Huang, Q., Xue, M., Huang, W., Zhang, H., Song, J., Jing, Y., Song, M. "Evaluation and Improvement
of Interpretability for Self-Explainable Part-Prototype Networks", ICCV 2023; reference code
hqhQAQ/EvalProtoPNet (``util/eval_consistency.py``, ``util/eval_stability.py``).

The protocol, for each test image and each prototype of the image's true class:

1. upsample the prototype's activation map to the image size (bicubic), take its argmax;
2. take a box of half size ``half_box`` around it (CUB: 224 px image, half size 36), clipped to
   the image;
3. every *visible* annotated keypoint inside the box *marks* that part for that prototype.

Consistency: a prototype is consistent if some part is marked in >= 80% of the class's images
in which that part is visible. The score is the % of consistent prototypes over all classes.
Stability: add N(0, 0.2) noise clipped to +-0.25 to the normalised image, mark the parts again.
The score is the mean over prototypes of the fraction of images whose marks (all parts) did not
change.

Nothing here depends on where the activation maps come from. The functions take arrays, so they
serve the synthetic benchmark (``protolib.data.synthetic``) and CUB alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

CUB_IMAGE_SIZE, CUB_HALF_BOX = 224, 36
CONSISTENCY_THRESHOLD = 0.8


def default_half_box(image_size: int) -> int:
    """The CUB box (half size 36 at 224 px) scaled to ``image_size``: round(36 / 224 * size)."""
    return round(CUB_HALF_BOX / CUB_IMAGE_SIZE * image_size)


def upsampled_argmax(activation_maps: np.ndarray | torch.Tensor, image_size: int, chunk: int = 256) -> np.ndarray:
    """(N, k, h, w) maps -> (N, k, 2) int (row, col) of the bicubic-upsampled map's maximum.

    torch's bicubic (a = -0.75, half-pixel centres) matches OpenCV's INTER_CUBIC, which the
    reference uses, to about 4e-7. Ties go to the first maximum in row-major order, as with the
    reference's ``np.where(m == m.max())[0][0]``. Maps are upsampled ``chunk`` at a time to bound
    memory.
    """
    maps = torch.as_tensor(activation_maps).detach().to("cpu", torch.float32)
    if maps.ndim != 4:
        raise ValueError(f"activation maps must be (N, k, h, w), got shape {tuple(maps.shape)}")
    n, k, h, w = maps.shape
    flat = maps.reshape(n * k, 1, h, w)
    best = torch.empty(n * k, dtype=torch.long)
    for start in range(0, n * k, chunk):
        up = F.interpolate(flat[start : start + chunk], size=(image_size, image_size), mode="bicubic", align_corners=False)
        best[start : start + chunk] = up.flatten(1).argmax(1)  # torch returns the first maximum
    return torch.stack([best // image_size, best % image_size], dim=1).reshape(n, k, 2).numpy()


def part_marks(
    activation_maps: np.ndarray | torch.Tensor,
    keypoints: np.ndarray,
    visible: np.ndarray,
    image_size: int,
    half_box: int | None = None,
) -> np.ndarray:
    """Which parts each prototype's most activated box covers: bool (N, k, P).

    ``activation_maps`` (N, k, h, w) are the maps of the k prototypes of each image's true class.
    ``keypoints`` (N, P, 2) hold (x, y) in pixel-centre coordinates of the ``image_size`` image.
    Each keypoint is rounded to the pixel that contains it; the reference truncates coordinates
    measured from the pixel corner, which gives the same pixel. ``visible`` (N, P) bool.
    Non-visible keypoints (NaN allowed) never mark. As in the reference, the box spans rows and
    columns [max(0, r - half), min(size, r + half)] around the argmax (r, c), inclusive at both
    ends.
    """
    half = default_half_box(image_size) if half_box is None else int(half_box)
    keypoints, visible = np.asarray(keypoints, dtype=np.float64), np.asarray(visible, dtype=bool)
    best = upsampled_argmax(activation_maps, image_size)  # (N, k, 2) as (row, col)
    if keypoints.shape[:2] != visible.shape or keypoints.shape[0] != best.shape[0] or keypoints.shape[2] != 2:
        raise ValueError(f"shapes do not match: maps {best.shape[:2]}, keypoints {keypoints.shape}, visible {visible.shape}")
    lo = np.maximum(best - half, 0)[:, :, None, :]  # (N, k, 1, 2)
    hi = np.minimum(best + half, image_size)[:, :, None, :]
    with np.errstate(invalid="ignore"):  # NaN keypoints of absent parts compare False
        pix = np.floor(keypoints[:, None, :, ::-1] + 0.5)  # (N, 1, P, 2) as (row, col)
        inside = np.all((pix >= lo) & (pix <= hi), axis=-1)
    return inside & visible[:, None, :]


def part_rates(marks: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(k, P) fraction of the images in which part p is visible that prototype j marks it.

    ``marks`` (N, k, P) and ``visible`` (N, P) cover the images of ONE class. A part that is
    never visible gets rate 0, as in the reference (it divides by max(count, 1)): a prototype
    cannot be consistent through a part that was never seen.
    """
    marks, visible = np.asarray(marks, dtype=bool), np.asarray(visible, dtype=bool)
    if marks.ndim != 3 or visible.shape != (marks.shape[0], marks.shape[2]):
        raise ValueError(f"marks must be (N, k, P) and visible (N, P), got {marks.shape} and {visible.shape}")
    counts = (marks & visible[:, None, :]).sum(axis=0)  # marks of hidden parts do not count
    return counts / np.maximum(visible.sum(axis=0), 1)


def consistent_prototypes(marks: np.ndarray, visible: np.ndarray, threshold: float = CONSISTENCY_THRESHOLD) -> np.ndarray:
    """(k,) bool: prototype j marks some part in >= ``threshold`` of the images where that part is visible.

    Compared on the ratio, as in the reference; exactly 80% counts as consistent.
    """
    if np.asarray(marks).shape[0] == 0:
        raise ValueError("consistency needs at least one image of the class")
    return np.asarray((part_rates(marks, visible) >= threshold).any(axis=1))


def consistency(marks: np.ndarray, visible: np.ndarray, threshold: float = CONSISTENCY_THRESHOLD) -> float:
    """Fraction of the class's prototypes that are consistent (ProtoEval), in [0, 1].

    ``marks`` (N, k, P) from :func:`part_marks` and ``visible`` (N, P), for the images of ONE class.
    """
    return float(consistent_prototypes(marks, visible, threshold).mean())


def consistency_percent(
    marks_per_class: Sequence[np.ndarray],
    visible_per_class: Sequence[np.ndarray],
    threshold: float = CONSISTENCY_THRESHOLD,
) -> float:
    """ProtoEval consistency score: % of consistent prototypes over all prototypes of all classes."""
    flags = [consistent_prototypes(m, v, threshold) for m, v in zip(marks_per_class, visible_per_class, strict=True)]
    return 100.0 * float(np.concatenate(flags).mean())


def prototype_stability(marks_clean: np.ndarray, marks_noisy: np.ndarray) -> np.ndarray:
    """(k,) fraction of images in which prototype j marks exactly the same parts with and without noise."""
    clean, noisy = np.asarray(marks_clean, dtype=bool), np.asarray(marks_noisy, dtype=bool)
    if clean.shape != noisy.shape or clean.ndim != 3:
        raise ValueError(f"marks must both be (N, k, P), got {clean.shape} and {noisy.shape}")
    if clean.shape[0] == 0:
        raise ValueError("stability needs at least one image")
    return (clean == noisy).all(axis=2).mean(axis=0)


def stability(marks_clean: np.ndarray, marks_noisy: np.ndarray) -> float:
    """Mean over prototypes of the fraction of images whose part marks are unchanged under noise, in [0, 1].

    ProtoEval stability for the images of one class (or any set of images sharing k prototypes).
    ``marks_noisy`` comes from :func:`part_marks` on the maps of :func:`add_protoeval_noise` images.
    """
    return float(prototype_stability(marks_clean, marks_noisy).mean())


def stability_percent(clean_per_class: Sequence[np.ndarray], noisy_per_class: Sequence[np.ndarray]) -> float:
    """ProtoEval stability score in %: mean over all prototypes of all classes.

    With the same k for every class this equals the reference's mean over classes of per-class
    means.
    """
    per_proto = [prototype_stability(c, n) for c, n in zip(clean_per_class, noisy_per_class, strict=True)]
    return 100.0 * float(np.concatenate(per_proto).mean())


def add_protoeval_noise(
    x_normalised: torch.Tensor, std: float = 0.2, clip: float | None = 0.25, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The ProtoEval stability perturbation: ``x + clip(N(0, std^2), -clip, clip)``, in normalised space.

    The noise is drawn on the generator's device (CPU when none) and then moved to ``x``'s device,
    so a seeded CPU generator gives the same noise on every device. The protocol as this project runs it clips the
    noise to +-0.25, and so does this function. The reference code's ``perturb_img`` adds
    N(0, 0.2) unclipped: pass ``clip=None`` to reproduce it.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(x_normalised.shape, generator=generator, device=device, dtype=torch.float32) * std
    if clip is not None:
        noise = noise.clamp_(-clip, clip)
    return x_normalised + noise.to(x_normalised.device, x_normalised.dtype)
