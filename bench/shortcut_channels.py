"""Could any non-negative part isolate the shortcut benchmark's background? An upper bound, read from the features.

    .venv/bin/python bench/shortcut_channels.py runs/shortcut-bench

A part p >= 0 is present at a cell by ``relu(f) . p``; the share of its presence mass that lies on background cells
is a weighted mean of the channels' own shares, so it is at most the best single channel's. Per seed, on the *val*
split (background cell: at least half background in the object mask), this prints that best share for the cells as
they are and for unit-length cells (per-position normalisation), beside the background's share of the cells and
the mean cell norm on background and object cells, and the best single channel used as a mask: the share of object
cells it leaves out when its threshold leaves out half of the background cells (a part selective enough for the edit
in space would leave out few).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from protolib.backbones.parts_net import build_parts_net
from protolib.benchmarks.shortcut_space import background_cells
from protolib.data.features import extract_features
from protolib.data.synthetic_shortcut import read_groups


def best_channel_share(f: torch.Tensor, background: torch.Tensor) -> float:
    """max over channels d of sum_background f_d / sum_all f_d."""
    return float((f[background].sum(0) / f.flatten(0, 2).sum(0).clamp_min(1e-12)).max())


def object_cells_at_half(f: torch.Tensor, background: torch.Tensor) -> float:
    """The best single channel as a mask: over channels, the least share of object cells it leaves out when its
    threshold leaves out half of the background cells."""
    best = 1.0
    for d in range(f.shape[-1]):
        level = f[..., d][background].median()
        best = min(best, float((f[..., d][~background] >= level).float().mean()))
    return best


def main(out: Path) -> None:
    torch.set_num_threads(1)
    data = out / "data"
    files = [row["file"] for row in read_groups(data).values() if row["split"] == "val"]
    print(
        "| seed | background share of cells | best channel, cells as they are | best channel, unit-length cells | "
        "mean cell norm, background / object | object cells left out with half the background, best channel |"
    )
    print("|---|---|---|---|---|---|")
    for root in sorted(out.glob("seed-*")):
        backbone = build_parts_net(root / "parts_net.safetensors")
        f = extract_features(backbone, [data / name for name in files], cache_dir=root / "features").feats.clamp_min(0)
        background = background_cells(data, files, tuple(f.shape[1:3]))
        unit = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-10)
        norms = f.norm(dim=-1)
        print(
            f"| {root.name[5:]} | {100 * float(background.float().mean()):.0f} % | "
            f"{100 * best_channel_share(f, background):.0f} % | {100 * best_channel_share(unit, background):.0f} % | "
            f"{float(norms[background].mean()):.1f} / {float(norms[~background].mean()):.1f} | "
            f"{100 * object_cells_at_half(f, background):.0f} % |"
        )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: shortcut_channels.py OUT  (OUT of `protoscope shortcut-benchmark`)")
    main(Path(sys.argv[1]))
