"""Intervention latency with 1,000 decomposed classes and k = 10 (D = 1280), no backbone rerun.

The head is EfficientNet-Lite0's own (1000 x 1280) with random prototypes: each class row v_c is split
into 10 random parts that sum to v_c exactly, so logits stay the model's and accuracies are real.

- one image: ``head.logits(pooled, cached_contributions, scale)`` against the baseline that recomputes
  the contributions from the pooled features first (``head(pooled, scale)``); target <= 100 ms.
- 500 val images (cached pooled features): ``protolib.metrics.intervention_effect`` recomputing the
  contributions and the un-intervened logits on every call, against the same call given both, computed
  once (what the app does).

Timings are interleaved (baseline and candidate alternate) and reported as medians.

    .venv/bin/python bench/bench_intervention.py [--quick]
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (puts the repository on sys.path)
import torch
from _common import load_features, machine_info, median, parser, table

from protolib.backbones import load_backbone
from protolib.evaluation.intervention import intervention_effect
from protolib.method.head import PrototypeHead

K = 10


def random_prototypes(weight: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """(C, k, D) random parts of every row of ``weight`` that sum to it."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(weight.shape[0], k, weight.shape[1], generator=gen) * weight.std()
    return weight.unsqueeze(1) / k + noise - noise.mean(dim=1, keepdim=True)


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    args = p.parse_args()
    single_repeats, split_repeats = (50, 3) if args.quick else (300, 15)

    print(f"machine: {machine_info()}")
    print(f"load average at start: {open('/proc/loadavg').read().split()[:3]}")
    backbone = load_backbone()
    weight, bias = backbone.head_weight.cpu(), backbone.head_bias.cpu()
    C, D = weight.shape
    head = PrototypeHead(weight, bias, torch.arange(C), random_prototypes(weight, K))

    if args.quick:  # no feature extraction: random non-negative pooled features, 10 labels
        gen = torch.Generator().manual_seed(0)
        pooled = torch.randn(500, D, generator=gen).clamp_min(0)
        labels = torch.randint(0, 10, (500,), generator=gen)
        source = "random pooled features (--quick)"
    else:  # the 500 val images (50 per class), cached after the first run
        per_class = load_features(backbone, args.data, "val", None, args.cache)
        pooled = torch.cat([f.pooled for _, f in per_class])
        labels = torch.cat([torch.full((len(f.paths),), cls.label) for cls, f in per_class])
        source = f"cached pooled val features of {len(per_class)} classes"
        gap = (head(pooled)[0] - torch.cat([f.logits for _, f in per_class])).abs().max().item()
        print(f"prototype head vs the model's logits: max |diff| = {gap:.2e}")
    print(f"head: {C} classes x k={K} x D={D}; {len(pooled)} images ({source})")

    # --- one image -----------------------------------------------------------------------------------------------
    x = pooled[:1]
    cached = head.contributions(x)
    scale = torch.ones(C, K)
    scale[int(labels[0]), 0] = 0  # switch one prototype of the image's class off
    assert torch.allclose(head.logits(x, cached, scale), head(x, scale)[0], atol=1e-4)
    single = interleaved({"cached": lambda: head.logits(x, cached, scale), "recompute": lambda: head(x, scale)}, single_repeats)

    # --- 500 images ----------------------------------------------------------------------------------------------
    contributions = head.contributions(pooled)
    before = head.logits(pooled, contributions).argmax(dim=1)
    scale = torch.ones(C, K)
    scale[labels.unique(), 0] = 0  # the first prototype of every class present switched off
    assert intervention_effect(head, pooled, labels, scale) == intervention_effect(
        head, pooled, labels, scale, contributions, before
    )
    effect = intervention_effect(head, pooled, labels, scale)
    split = interleaved(
        {
            "cached": lambda: intervention_effect(head, pooled, labels, scale, contributions, before),
            "recompute": lambda: intervention_effect(head, pooled, labels, scale),
        },
        split_repeats,
    )
    setup = interleaved({"contributions": lambda: head.contributions(pooled)}, max(3, split_repeats // 3))

    def ms(values):
        return 1000 * median(values)

    rows = [
        [
            "1 image",
            "`head.logits(pooled, cached, scale)`",
            single_repeats,
            f"{ms(single['cached']):.3f}",
            f"{1000 * min(single['cached']):.3f}",
            f"{ms(single['recompute']) / ms(single['cached']):.1f}x",
        ],
        [
            "1 image",
            "baseline: `head(pooled, scale)` (recomputes contributions)",
            single_repeats,
            f"{ms(single['recompute']):.3f}",
            f"{1000 * min(single['recompute']):.3f}",
            "1.0x",
        ],
        [
            f"{len(pooled)} images",
            "`intervention_effect` given the cached contributions + predictions (what the app does)",
            split_repeats,
            f"{ms(split['cached']):.1f}",
            f"{1000 * min(split['cached']):.1f}",
            f"{ms(split['recompute']) / ms(split['cached']):.1f}x",
        ],
        [
            f"{len(pooled)} images",
            "baseline: `intervention_effect` recomputing the contributions each call",
            split_repeats,
            f"{ms(split['recompute']):.1f}",
            f"{1000 * min(split['recompute']):.1f}",
            "1.0x",
        ],
        [
            f"{len(pooled)} images",
            "(one-off) `head.contributions(pooled)`",
            len(setup["contributions"]),
            f"{ms(setup['contributions']):.1f}",
            f"{1000 * min(setup['contributions']):.1f}",
            "",
        ],
    ]
    print()
    print(table(["scope", "operation", "calls", "median ms", "best ms", "speed-up vs baseline"], rows))
    print(
        f"\n1-image target <= 100 ms: {'met' if ms(single['cached']) <= 100 else 'NOT met'}; "
        f"effect of the test intervention: top-1 {effect['top1_before']:.3f} -> {effect['top1_after']:.3f}, "
        f"{effect['predictions_changed']} predictions changed"
    )
    print(f"load average at end: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
