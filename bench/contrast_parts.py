"""Parts read by contrast: each part is the mean of the cells a clustering (NMF ownership or k-means) gives it,
minus the mean of the class's other cells, clamped at 0: the channels where the part's cells stand out of their
photos, rather than those where they are merely loud. The unsupervised analogue of ``parts_ceiling.py``'s oracle
"relu(mean of the part's cells - mean of the others)", with the clustering's cells for the keypoints' (no ground
truth read). Scored on the ground-truth parts benchmark's saved seeds (``_parts_ideas.py``):

    OMP_NUM_THREADS=1 .venv/bin/python bench/contrast_parts.py runs/parts-tune 10 11 12 13
"""

from __future__ import annotations

import sys

import torch
from _parts_ideas import parse, report
from argmax_parts import kmeans_owners, nmf_owners

from protolib.method.discovery import evidence_weights


def contrast(A: torch.Tensor, owners: torch.Tensor, k: int) -> torch.Tensor:
    """(k, D): relu(mean of part j's cells - mean of the other cells); a part that owns no cell gets the mean cell."""
    rows = []
    for j in range(k):
        mine = owners == j
        if not mine.any() or mine.all():
            rows.append(A.mean(dim=0))
            continue
        rows.append((A[mine].mean(dim=0) - A[~mine].mean(dim=0)).clamp_min(0))
    return torch.stack(rows)


IDEAS = {
    "NMF cells, contrast": lambda c: contrast(c.A, nmf_owners(c.A, c.k, c.seed), c.k),
    "evidence-weighted NMF cells, contrast": lambda c: contrast(c.A, nmf_owners(c.A, c.k, c.seed, evidence_weights(c.A, c.v)), c.k),
    "k-means cells, contrast": lambda c: contrast(c.A, kmeans_owners(c.A, c.k, c.seed), c.k),
}


if __name__ == "__main__":
    out, seeds = parse(sys.argv[1:], "contrast_parts.py")
    report(out, seeds, IDEAS)
