"""Features on a finer grid for discovery only: the class's parts are found by NMF (the paper's, or evidence-
weighted) on cells twice as dense in each direction, then read, like every discovery, on the model's own grid
(the maps the app shows). Scored on the ground-truth parts benchmark's saved seeds (``_parts_ideas.py``).

    OMP_NUM_THREADS=1 protoscope parts-benchmark --out runs/parts-tune --seeds 10 11 12 13
    OMP_NUM_THREADS=1 .venv/bin/python bench/finer_grid.py runs/parts-tune 10 11 12 13

Two ways to a finer grid:

- *shift and stitch*: the backbone run on the photo and on it shifted by half the feature stride (4 px of
  PartsNet's 8) in x, in y and in both (edge pixels repeated), the four grids interleaved: the model's own
  features, at twice the resolution, for any backbone of known stride;
- *input upsampled 2x*: the photo resized to twice its size (bilinear); the same network on it gives a grid
  twice as fine, but of features of a photo at another scale than the one the head reads.
"""

from __future__ import annotations

import sys

import cv2
import torch
from _parts_ideas import ClassCells, parse, report
from torch.nn import functional as F

from protolib.benchmarks.toy_model import to_input
from protolib.method.discovery import evidence_weights
from protolib.method.nmf import batched_nmf

STRIDE = 8  # PartsNet's feature stride


def _photos(paths: list[str]) -> torch.Tensor:
    return to_input([cv2.cvtColor(cv2.imread(p, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in paths])


def _shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The photo moved up by dy and left by dx pixels, the edge repeated: its cell (r, c) sees what cell
    (r + dy / stride, c + dx / stride) of the original would."""
    return F.pad(x[..., dy:, dx:], (0, dx, 0, dy), mode="replicate")


@torch.inference_mode()
def stitched_cells(cells: ClassCells) -> torch.Tensor:
    """(photos x (2 side)^2, D): shift and stitch, rows in the photo's row-major order of the fine grid."""
    x, half = _photos(cells.paths), STRIDE // 2
    grids = {(dy, dx): cells.backbone.spatial_features(_shifted(x, dy, dx)).float() for dy in (0, half) for dx in (0, half)}
    n, d, h, w = grids[0, 0].shape
    fine = torch.empty(n, d, 2 * h, 2 * w)
    for (dy, dx), f in grids.items():
        fine[:, :, dy // half :: 2, dx // half :: 2] = f
    return fine.permute(0, 2, 3, 1).reshape(-1, d).clamp_min(0)


@torch.inference_mode()
def upsampled_cells(cells: ClassCells) -> torch.Tensor:
    x = F.interpolate(_photos(cells.paths), scale_factor=2, mode="bilinear", align_corners=False)
    f = cells.backbone.spatial_features(x).float()
    return f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).clamp_min(0)


def _nmf(A: torch.Tensor, cells: ClassCells, weighted: bool) -> torch.Tensor:
    if weighted:
        A = A * evidence_weights(A, cells.v)[:, None]
    return batched_nmf([A], cells.k, random_state=cells.seed).prototypes[0]


IDEAS = {
    "NMF on a grid twice as fine (shift and stitch)": lambda c: _nmf(stitched_cells(c), c, False),
    "evidence-weighted NMF on a grid twice as fine (shift and stitch)": lambda c: _nmf(stitched_cells(c), c, True),
    "NMF on a grid twice as fine (input upsampled 2x)": lambda c: _nmf(upsampled_cells(c), c, False),
    "evidence-weighted NMF on a grid twice as fine (input upsampled 2x)": lambda c: _nmf(upsampled_cells(c), c, True),
}


def check_stitching(cells: ClassCells) -> float:
    """The unshifted quarter of the fine grid is the model's own grid: max |difference| to the cached cells."""
    fine = stitched_cells(cells).reshape(len(cells.paths), 2 * cells.side, 2 * cells.side, -1)
    return float((fine[:, ::2, ::2].reshape(-1, fine.shape[-1]) - cells.A).abs().max())


if __name__ == "__main__":
    out, seeds = parse(sys.argv[1:], "finer_grid.py")
    report(out, seeds, IDEAS)
