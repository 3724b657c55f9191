"""Run a discovery that the library does not offer through the estimator, for the scripts of ``bench/`` only, so
that steps 2-3 (scaling, refinement, the exact head) are exactly those every discovery gets."""

from __future__ import annotations

from collections.abc import Callable

from protolib.method import estimator
from protolib.method.discovery import check_discovery
from protolib.method.nmf import NMFResult

#: (matrices, k, head_rows, max_iter, tol, seed) -> NMFResult
Variant = Callable[..., NMFResult]
_VARIANTS: dict[str, Variant] = {}


def register_variant(name: str, variant: Variant) -> None:
    """``discovery=name`` then runs ``variant`` in every decomposition this process makes."""
    _VARIANTS[name] = variant
    estimator.PRESENCE_DAMPING.setdefault(name, 0.0)  # its part maps read as the paper's are
    library = getattr(estimator.discover, "library", estimator.discover)

    def discover(name, matrices, k, head_rows, max_iter=200, tol=1e-4, random_state=0, solver="hals", device=None):
        if name in _VARIANTS:
            return _VARIANTS[name](matrices, k, head_rows, max_iter, tol, random_state)
        return library(name, matrices, k, head_rows, max_iter, tol, random_state, solver, device)

    discover.library = library
    estimator.discover = discover
    estimator.check_discovery = lambda name: None if name in _VARIANTS else check_discovery(name)
