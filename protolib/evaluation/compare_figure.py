"""A comparison of runs (``compare.py``) as one PNG figure, for the command line and the page's download."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..explain import prototype_colour
from ..files import atomic_path
from .compare import MAPS, Comparison


def comparison_png(comparison: Comparison, photos: Sequence[int] | None = None, path: str | Path | None = None) -> bytes:
    """One PNG of the comparison: for each photo shown (default: the one the runs disagree on most), one
    row per run with its part map and its prototypes' heatmaps, lined up with the first run's matched
    prototypes, each titled with its mean contribution and share; the matches and the agreement below.
    Written to ``path`` too when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = comparison
    shown = list(photos) if photos is not None else c.disagreeing(1)
    columns = [c.columns(s) for s in range(len(c.sides))]
    width = 1 + max(len(col) for col in columns)
    rows = len(shown) * len(c.sides)
    lines = [f"agreement (mean matched correlation of {MAPS[c.maps].split(' (')[0]}): {c.agreement:.2f}"] + [
        f"{c.sides[p.a].name} ↔ {c.sides[p.b].name}: " + ", ".join(f"P{i + 1}↔P{j + 1} ({r:+.2f})" for i, j, r in p.pairs)
        for p in c.pairs
    ]
    text_height = 0.28 * len(lines) + 0.3
    fig = plt.figure(figsize=(2.1 * width, 2.35 * rows + text_height + 0.6))
    grid = fig.add_gridspec(rows + 1, width, height_ratios=[2.35] * rows + [text_height])
    for block, photo in enumerate(shown):
        for s, side in enumerate(c.sides):
            r = block * len(c.sides) + s
            ax = fig.add_subplot(grid[r, 0])
            ax.imshow(side.part_map_image(photo))
            ax.set_title(f"{side.name[:26]}\nk={side.k} · part map", fontsize=8)
            ax.set_ylabel(f"photo {photo + 1}" if s == 0 else "", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            for col, i in enumerate(columns[s]):
                if i is None:
                    continue
                ax = fig.add_subplot(grid[r, col + 1])
                ax.imshow(side.heatmap_image(photo, i))
                ax.axis("off")
                match = ""
                if s > 0 and col < c.sides[0].k:
                    partner = next(p for p in c.pairs if p.a == 0 and p.b == s).partner(col)
                    match = f" ↔P{col + 1} r={partner[1]:+.2f}" if partner else ""
                ax.set_title(
                    f"P{i + 1}: {float(side.mean_contribution[i]):+.2f} ({100 * float(side.shares[i]):.0f} %){match}",
                    fontsize=8,
                    color=np.array(prototype_colour(i)) / 255 * 0.8,
                )
    ax = fig.add_subplot(grid[rows, :])
    ax.axis("off")
    ax.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=9, family="DejaVu Sans")
    fig.suptitle(
        f"“{c.class_name}”: {len(c.sides)} runs on the same {len(c.photos)} held-out photos "
        f"(heatmaps f·p̃ with mean contribution and share of the logit)",
        fontsize=10,
    )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    data = buffer.getvalue()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return data
