"""Time per class of the NMF and of every refinement strategy, at 10 and at 100 classes, side by side;
and a decomposition's total time with and without the comparison strategies.

10 classes: EfficientNet-Lite0 features of the first 60 train photos of each sample class (cached).
100 classes: generated non-negative features of the same shape (30 photos x 7 x 7 positions x 1280,
each class a different mix of 8 random parts plus noise), with a random head; the timings depend on
the shapes, not on the values. k = 3, 1 torch thread (like for like on a shared 2-core machine).

    .venv/bin/python bench/bench_refine.py [--quick]
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (puts the repository on sys.path)
import torch
from _common import load_features, machine_info, median, parser, table, timed

from protolib.backbones import load_backbone
from protolib.method import STRATEGIES, PartPrototypes, feature_matrix
from protolib.method.nmf import batched_nmf
from protolib.method.refine import heatmap_covariance, refine, residual, scale_prototypes

K = 3


def generated(classes: int, images: int = 30, positions: int = 49, dim: int = 1280, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    parts = torch.rand(classes, 8, dim, generator=generator) ** 4
    matrices = []
    for c in range(classes):
        mix = torch.rand(images * positions, 8, generator=generator) ** 3
        matrices.append(mix @ parts[c] + 0.05 * torch.rand(images * positions, dim, generator=generator))
    return matrices, torch.randn(classes, dim, generator=generator) * 0.05


def measure(matrices: list[torch.Tensor], v: torch.Tensor, repeats: int) -> dict[str, float]:
    """Seconds per class (median of ``repeats``) of the NMF, scaling + covariance, and each strategy."""
    seconds = {name: [] for name in ("nmf", "scaling + covariance", *STRATEGIES)}
    for _ in range(repeats):
        start = time.perf_counter()
        P = batched_nmf(matrices, K).prototypes
        seconds["nmf"].append(time.perf_counter() - start)
        start = time.perf_counter()
        alpha = scale_prototypes(P, v)
        covariance = heatmap_covariance(matrices, P, residual(P, alpha, v))
        seconds["scaling + covariance"].append(time.perf_counter() - start)
        for strategy in STRATEGIES:
            start = time.perf_counter()
            refine(strategy, P, alpha, v, matrices, covariance)
            seconds[strategy].append(time.perf_counter() - start)
    return {name: median(values) / len(matrices) for name, values in seconds.items()}


def total(matrices, v, compare: tuple[str, ...]) -> float:
    model = PartPrototypes(k=K, compare=compare)
    labels = torch.repeat_interleave(torch.arange(len(matrices)), torch.tensor([len(A) for A in matrices]))
    t, _ = timed(lambda: model.fit(matrices, labels, v))  # (n, D) feature positions, one label each
    return t


def main() -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    repeats = 1 if args.quick else 3
    torch.set_num_threads(1)
    print(f"machine: {machine_info()}")
    backbone = load_backbone()
    features = load_features(backbone, args.data, "train", 60, args.cache)
    real = [feature_matrix(f.feats) for _, f in features]
    real_v = backbone.head_weight[[cls.label for cls, _ in features]]
    synthetic = generated(20 if args.quick else 100)
    settings = {f"{len(real)} classes (sample photos)": (real, real_v), f"{len(synthetic[0])} classes (generated)": synthetic}

    per_class = {name: measure(m, v, repeats) for name, (m, v) in settings.items()}
    stages = list(next(iter(per_class.values())))
    print(f"\nms per class, k = {K}, median of {repeats}:")
    print(table(["stage", *settings], [[s, *(f"{1000 * per_class[n][s]:.1f}" for n in settings)] for s in stages]))

    rows = []
    for name, (m, v) in settings.items():
        alone, everything = total(m, v, ()), total(m, v, STRATEGIES)
        rows.append([name, f"{alone:.2f}", f"{everything:.2f}", f"{everything / alone:.2f}x"])
    print("\na decomposition's time once features are cached (NMF + scaling + refinement), s:")
    print(table(["classes", "default strategy only", "with every comparison strategy", "ratio"], rows))


if __name__ == "__main__":
    main()
