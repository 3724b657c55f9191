"""Which number of prototypes k the data supports, across runs of one model and its classes:
:func:`k_sweep_point` gathers one run's head and feature errors, signed fidelity and seed stability;
:func:`suggest_k` reads which k the data supports with a stated rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch

from ..runs import Run
from .compare import run_label

#: the rule :func:`suggest_k` applies, in words
K_RULE = (
    "the smallest k after which the head error improves by less than {improvement:.0%} at the next k, "
    "with signed heatmap fidelity of at least {fidelity:.2f} and no flipped prototype"
)


def k_sweep_point(
    run: Run, weight: torch.Tensor, evaluation: Mapping, stability: Mapping | None = None, health: Mapping | None = None
) -> dict:
    """One run's point of the k sweep: head and feature errors, the signed held-out fidelity of its own
    strategy (``evaluation``: ``evaluate_run``'s figures), the seed stability (``stability``: the
    report's ``seed_stability_section``; None when not measured) and how many prototypes are dead or
    duplicates (``health``: ``prototype_health.health_counts``; None when not measured)."""
    fidelity = evaluation.get("signed_fidelity", {}).get(run.strategy)
    return {
        "run": run_label(run, ""),
        "k": run.k,
        "strategy": run.strategy,
        "head error": float(run.head_error(weight.cpu()).mean()),
        "feature error": float(run.feature_error.mean()),
        "fidelity": fidelity["mean"] if fidelity else None,
        "worst fidelity": fidelity["min"] if fidelity else None,
        "flips": fidelity["flips"] if fidelity else None,
        "seed stability": stability["mean"] if stability else None,
        "dead": health["dead"] if health else None,
        "duplicates": health["duplicates"] if health else None,
    }


@dataclass(frozen=True)
class KChoice:
    """The k the data supports (None: no run passes the rule), the sentence that says so, and the rule."""

    k: int | None
    sentence: str
    rule: str
    per_k: list[dict]  # one point per k (the run that stands for it), sorted by k


def _fidelity(point: Mapping) -> float:
    """A point's fidelity; one without counts as the worst."""
    fidelity = point.get("fidelity")
    return -np.inf if fidelity is None else fidelity


def _per_k(points: Sequence[Mapping]) -> list[dict]:
    """One point per k: the run with the best fidelity at that k (errors do not depend on the strategy)."""
    best: dict[int, Mapping] = {}
    for p in points:
        current = best.get(p["k"])
        if current is None or _fidelity(p) > _fidelity(current):
            best[p["k"]] = p
    return [dict(best[k]) for k in sorted(best)]


def suggest_k(points: Sequence[Mapping], improvement: float = 0.05, min_fidelity: float = 0.95) -> KChoice:
    """Which k the runs support: ``K_RULE``. The head error of k is compared with that of the next larger
    k among the runs; the largest k measured never qualifies (nothing says that more would not help)."""
    rule = K_RULE.format(improvement=improvement, fidelity=min_fidelity)
    per_k = _per_k(points)
    if len(per_k) < 2:
        return KChoice(None, "Make runs of the same model and classes with at least two values of k to choose k.", rule, per_k)
    for here, after in pairwise(per_k):
        gain = (here["head error"] - after["head error"]) / max(here["head error"], 1e-12)
        faithful = here.get("fidelity") is not None and here["fidelity"] >= min_fidelity and not here.get("flips")
        if gain < improvement and faithful:
            return KChoice(
                here["k"],
                (
                    f"The data supports k = {here['k']}: going to k = {after['k']} lowers the head error by only "
                    f"{100 * gain:.1f} % ({here['head error']:.3f} → {after['head error']:.3f}), and at k = {here['k']} the "
                    f"heatmap fidelity is {here['fidelity']:.3f} with no flipped prototype."
                ),
                rule,
                per_k,
            )
    unmeasured = [p["k"] for p in per_k if p.get("fidelity") is None]
    if unmeasured:
        reason = f"the fidelity of k = {', '.join(map(str, unmeasured))} is not measured yet"
    else:
        reason = f"the head error still falls by {100 * improvement:.0f} % or more at every step, or fidelity is low"
    return KChoice(
        None, f"No k among {', '.join(str(p['k']) for p in per_k)} passes the rule: {reason}; try a larger k.", rule, per_k
    )
