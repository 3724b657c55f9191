"""Step 1 of the method, discovery: how a class's part prototypes P (k x D, non-negative) are found.

Every variant only changes how P is found; scaling, refinement and the exact head (steps 2-3) read P
the same way, so every variant keeps the method exact and its signed fidelity tested.

- ``nmf``: the paper's method, NMF of the class's feature matrix A (positions x D)
  (Tan, Zhou & Chen, ICML 2024).
- ``evidence``: NMF of A with each position's row weighted by its share of the class's evidence,
  ``w = (relu(f . v_c) / max relu(f . v_c)) ** EVIDENCE_POWER``. On A itself the loudest cells, often
  background that carries no evidence, take most of the squared error and so decide the parts; weighted,
  the cells that make the class's logit decide them, and the other cells count for (almost) nothing.
  The head row v_c is what the method decomposes anyway, so this reads nothing the method did not have.
- ``unit-evidence``: the same weights on the class's cells scaled to unit length (``A_i / ||A_i||``), so that
  a part is a direction the class's evidence points along, whatever its loudness; its part maps read a cell
  with its loudness damped (``PRESENCE_DAMPING``, ``head.read_cells``: ``||f||^0.5 ||p|| cos(f, p)``), since on
  these features a map read by direction alone breaks while loudness counted in full lets the loudest cells
  win every map. Chosen on the parts benchmark's seeds 10-13 and 0-4 and written down before it was scored on
  five fresh seeds (20-24), where its part maps beat k-means at its best reading by 10 points
  (``bench/RESULTS.md``, section 14).

Tried on the ground-truth parts benchmark's tuning seeds (10-13, never the reported 0-4) and not kept, since
none came near ``evidence`` there: NMF of unit-length cells (per-position normalisation), the same weighted by
evidence (read as the paper's maps are; read damped, it is ``unit-evidence``), NMF of the half of the cells with
the most evidence, NMF of unit-length cells started from spherical k-means, NMF merged over five seeds by
matching; figures in the README ("Ground-truth parts benchmark", ``bench/discovery_tuning.py``). Also tried and
not kept: a dictionary shared by all classes with each class's own parts on top (``bench/shared_dictionary.py``:
no better than the paper's NMF on the parts benchmark, and it isolates no background on the shortcut benchmark),
sparse coefficients on the evidence-weighted cells (``bench/sparse_nmf.py``: no better than ``evidence`` at k =
true on the tuning seeds) and spatially smooth NMF of them (``bench/smooth_nmf.py``: below ``evidence`` on the
tuning seeds and on five fresh ones), NMF on a grid twice as fine by shift and stitch or an upsampled input
(``bench/finer_grid.py``: ties ``evidence`` at best), and each part refitted from a clustering's cells to win
its photo's argmax or read by contrast (``bench/argmax_parts.py``, ``bench/contrast_parts.py``: below the
clustering they start from). The ceiling, an oracle told where the parts are (``bench/parts_ceiling.py``),
reaches 94.5 % on the reported seeds (``unit-evidence``: 82.7 %): the features allow better part maps still.
"""

from __future__ import annotations

import torch

from .nmf import NMFResult, batched_nmf

DEFAULT_DISCOVERY = "nmf"
DISCOVERIES = ("nmf", "evidence", "unit-evidence")
#: how pages, tables and the CLI name each variant
DISCOVERY_LABELS = {
    "nmf": "the paper's NMF",
    "evidence": "evidence-weighted NMF",
    "unit-evidence": "evidence-weighted NMF of unit-length cells",
}
#: how each variant's part maps read a cell (``head.read_cells``): 0 counts loudness in full (the paper's maps).
#: A run records its own value, so a later change here changes no saved run's maps.
PRESENCE_DAMPING = {"nmf": 0.0, "evidence": 0.0, "unit-evidence": 0.5}
#: the weight's exponent, chosen on the parts benchmark's tuning seeds (10-13), never on the reported 0-4
EVIDENCE_POWER = 6.0


def check_discovery(name: str) -> None:
    if name not in DISCOVERIES:
        raise ValueError(f"unknown discovery {name!r}; choose one of {', '.join(DISCOVERIES)}")


def evidence_weights(A: torch.Tensor, v: torch.Tensor, power: float = EVIDENCE_POWER) -> torch.Tensor:
    """(n,) weight of each row of A (n, D) for class row v (D,): its positive evidence ``f . v`` over the
    largest, to ``power``. A class with no positive evidence anywhere gets weight 1 everywhere (the
    paper's NMF): there is nothing to weight by."""
    evidence = (A.float() @ v.float().to(A.device)).clamp_min(0)
    top = evidence.max()
    if not top > 0:
        return torch.ones(len(A), device=A.device)
    return (evidence / top) ** power


def discover(
    name: str,
    matrices: list[torch.Tensor],
    k: int,
    head_rows: torch.Tensor,
    max_iter: int = 200,
    tol: float = 1e-4,
    random_state: int = 0,
    solver: str = "hals",
    device: torch.device | str | None = None,
) -> NMFResult:
    """The prototypes of every class (``NMFResult.prototypes`` (C, k, D)) by discovery ``name``;
    ``head_rows`` (C, D) are the classes' rows of the linear head.

    ``relative_error`` is that of the factorisation the variant computed, on the matrix it factorised
    (for ``evidence``, the weighted rows; for ``unit-evidence``, the weighted unit-length rows).
    """
    check_discovery(name)
    if name == "evidence":
        matrices = [A * evidence_weights(A, v).to(A)[:, None] for A, v in zip(matrices, head_rows)]
    elif name == "unit-evidence":  # an all-zero cell stays zero
        matrices = [
            A / A.norm(dim=1, keepdim=True).clamp_min(1e-12) * evidence_weights(A, v).to(A)[:, None]
            for A, v in zip(matrices, head_rows)
        ]
    return batched_nmf(matrices, k, max_iter, tol, random_state, solver, device)
