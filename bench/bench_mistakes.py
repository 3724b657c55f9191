"""Culprits of 500 held-out mistakes-to-be with 1,000 decomposed classes, from cached contributions.

The head is generated at EfficientNet-Lite0's shape (1000 x 1280, every class decomposed into k random parts
that sum to its row), and so are 500 pooled feature vectors (non-negative, like a ReLU network's). Labels are
made so that about a third of the photos are wrong the way real mistakes are: 20 % are the second-ranked class,
11 % the third, 2 % a random class. No backbone runs.

- candidate: ``find_culprits`` (batched: every single switch of every photo as one (N, C, k) comparison, pairs
  only where at most two classes outrank the true one), which also counts each prototype's fixed/broken.
- baseline: the naive per-photo loop, for every wrong photo, switches off each prototype of each class ranked
  above the true one through ``head.logits`` (one call each), then the pairs, with the same pruning (pairs
  only where at most two classes outrank the true one). It does not count fixed/broken.

Both must find the same culprit kind (one / two / none) for every photo. Calls alternate; medians reported.

    .venv/bin/python bench/bench_mistakes.py [--quick]
"""

from __future__ import annotations

import itertools
import time

import _common  # noqa: F401  (puts the repository on sys.path)
import torch
from _common import machine_info, median, parser, table

from protolib.evaluation.mistakes import find_culprits
from protolib.method.head import PrototypeHead

C, D, N = 1000, 1280, 500


def generated(k: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(C, D, generator=gen) * 0.05
    bias = torch.randn(C, generator=gen) * 0.1
    noise = torch.randn(C, k, D, generator=gen) * weight.std()
    prototypes = weight.unsqueeze(1) / k + noise - noise.mean(dim=1, keepdim=True)
    head = PrototypeHead(weight, bias, torch.arange(C), prototypes)
    pooled = torch.randn(N, D, generator=gen).clamp_min(0)
    order = head.logits(pooled, head.contributions(pooled)).argsort(dim=1, descending=True)
    draw = torch.rand(N, generator=gen)
    labels = order[:, 0].clone()
    labels[draw < 0.33] = order[draw < 0.33, 1]
    labels[draw < 0.13] = order[draw < 0.13, 2]
    random = draw < 0.02
    labels[random] = torch.randint(0, C, (int(random.sum()),), generator=gen)
    return head, pooled, labels


def fixes(photo, edit) -> bool:
    """Whether switching off the prototypes ``edit`` puts the photo's true class on top (one head.logits call)."""
    head, pooled, contributions, true = photo
    scale = torch.ones(C, head.k)
    for c, i in edit:
        scale[c, i] = 0
    return int(head.logits(pooled, contributions, scale).argmax()) == true


def naive(head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor, contributions: torch.Tensor) -> list[str]:
    """One kind per wrong photo ("one", "two", "more"), one head.logits call per candidate edit."""
    logits = head.logits(pooled, contributions)
    kinds = []
    for n in (logits.argmax(1) != labels).nonzero().flatten().tolist():
        t = int(labels[n])
        above = [int(c) for c in (logits[n] >= logits[n, t]).nonzero().flatten() if int(c) != t]
        candidates = [(c, i) for c in above for i in range(head.k)]
        photo = (head, pooled[n : n + 1], contributions[n : n + 1], t)
        if any(fixes(photo, [cand]) for cand in candidates):
            kinds.append("one")
        elif len(above) <= 2 and any(fixes(photo, pair) for pair in itertools.combinations(candidates, 2)):
            kinds.append("two")
        else:
            kinds.append("more")
    return kinds


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    repeats = 2 if args.quick else 5
    print(machine_info())
    rows = []
    for k in (3, 10):
        head, pooled, labels = generated(k)
        contributions = head.contributions(pooled)  # cached, as the page and the CLI hold them
        fast, slow = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            found = find_culprits(head, pooled, labels, contributions)
            fast.append(time.perf_counter() - start)
            start = time.perf_counter()
            kinds = naive(head, pooled, labels, contributions)
            slow.append(time.perf_counter() - start)
        assert [c.reason for c in found.culprits] == kinds, "the two searches disagree"
        counts = {kind: kinds.count(kind) for kind in ("one", "two", "more")}
        rows.append(
            [
                k,
                len(kinds),
                counts["one"],
                counts["two"],
                counts["more"],
                median(fast),
                median(slow),
                f"{median(slow) / median(fast):.1f}x",
            ]
        )
    print(table(["k", "mistakes", "fixed by one", "by two", "more", "find_culprits s", "naive loop s", "speed-up"], rows))


if __name__ == "__main__":
    main()
