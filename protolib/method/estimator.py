"""The method as one estimator: hyperparameters in the constructor, data in ``fit``, results in
attributes ending in ``_`` (the scikit-learn convention).

>>> model = PartPrototypes(k=3).fit(features, labels, head_weight)   # features (N, H, W, D)
>>> model.refined_.sum(dim=1)        # == head_weight[model.classes_]
>>> head = model.head(head_weight, bias)   # a PrototypeHead for all C classes

Classes are independent, so ``partial_fit`` adds classes to a fitted model: the pipeline feeds
them in chunks to keep memory bounded however many classes there are.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .discovery import DEFAULT_DISCOVERY, check_discovery, discover
from .head import PrototypeHead
from .nmf import SOLVERS
from .refine import DEFAULT_STRATEGY, MAX_K, STRATEGIES, heatmap_covariance, refine, residual, scale_prototypes

#: "strongly present" for a part = this quantile of its heatmap over the training positions ...
PRESENCE_QUANTILE = 0.99
#: ... estimated on at most this many positions (torch.quantile refuses inputs above 2**24 elements)
PRESENCE_POSITIONS = 100_000


def feature_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, H, W, D) features -> the non-negative (N*H*W, D) matrix A that NMF factorises.

    Negative activations (GELU, SiLU) are set to zero, as the method prescribes."""
    return features.reshape(-1, features.shape[-1]).clamp_min(0)


def check_k(k: int) -> None:
    if not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k={k!r} is not sensible: choose between 1 and {MAX_K} prototypes per class")


class PartPrototypes:
    """Post-hoc part prototypes of a linear head (Tan, Zhou & Chen, ICML 2024).

    Parameters
    ----------
    k : prototypes per class.
    discovery : how the prototypes are found (``discovery.DISCOVERIES``); ``"nmf"`` is the paper's NMF.
    strategy : how the residual of the head row is split among the prototypes (``refine.STRATEGIES``).
    solver : ``"hals"`` or ``"mu"`` for the per-class NMF.
    random_state : seed of the NMF initialisation.
    max_iter, tol : NMF stopping rule.
    compare : further strategies to refine with, for evaluation (``refined_by_strategy_``).
    device : where the NMF runs ("cpu", "cuda"); results are on the CPU.

    Attributes (after ``fit``)
    --------------------------
    classes_ : (C',) labels decomposed, in the order of every other attribute.
    prototypes_ : (C', k, D) the discovered (NMF) prototypes p_i.
    alpha_ : (C', k) least-squares scales of the prototypes to the head rows.
    refined_ : (C', k, D) refined prototypes p~_i of ``strategy``; they sum to the head rows.
    refined_by_strategy_ : {strategy: (C', k, D)} for ``strategy`` and every ``compare`` strategy.
    feature_error_ : (C',) ||A - E P|| / ||A||.
    n_iter_ : (C',) NMF updates each class took.
    presence_scale_ : (C', k) the heatmap level of each part that counts as "strongly present".
    """

    def __init__(
        self,
        k: int = 3,
        strategy: str = DEFAULT_STRATEGY,
        solver: str = "hals",
        random_state: int = 0,
        max_iter: int = 200,
        tol: float = 1e-4,
        compare: tuple[str, ...] = (),
        device: str | torch.device = "cpu",
        discovery: str = DEFAULT_DISCOVERY,
    ):
        self.k = k
        self.discovery = discovery
        self.strategy = strategy
        self.solver = solver
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.compare = tuple(compare)
        self.device = device

    def get_params(self) -> dict:
        """The hyperparameters, JSON-able (runs record them in their manifest)."""
        return {
            "k": self.k,
            "strategy": self.strategy,
            "solver": self.solver,
            "random_state": self.random_state,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "compare": list(self.compare),
            "discovery": self.discovery,
        }

    def validate_params(self) -> None:
        """Raise ValueError for hyperparameters that cannot work (called by ``fit``; callers about to do
        expensive work first call it themselves)."""
        check_k(self.k)
        check_discovery(self.discovery)
        for strategy in (self.strategy, *self.compare):
            if strategy not in STRATEGIES:
                raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.strategy, *self.compare)))

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, features: torch.Tensor, labels: torch.Tensor, head_weight: torch.Tensor) -> PartPrototypes:
        """Decompose the head rows of every class in ``labels``.

        features (N, H, W, D) spatial features of the training images; labels (N,) their classes;
        head_weight (C, D) the linear head whose rows ``labels`` index.
        """
        labels = torch.as_tensor(labels, dtype=torch.long)
        if features.ndim != 4 or len(features) != len(labels):
            raise ValueError(f"features must be (N, H, W, D), one label each: got {tuple(features.shape)}, {len(labels)} labels")
        classes = labels.unique()
        matrices = [feature_matrix(features[labels == c]) for c in classes]
        self._reset()
        return self.partial_fit(matrices, classes, head_weight)

    def partial_fit(
        self,
        matrices: list[torch.Tensor],
        classes: torch.Tensor,
        head_weight: torch.Tensor,
        on_stage: Callable[[str], None] | None = None,
    ) -> PartPrototypes:
        """Add classes to the model: ``matrices[i]`` is the non-negative (n_i, D) feature matrix of
        class ``classes[i]`` (see :func:`feature_matrix`). ``on_stage(name)`` is called as each of
        "nmf", "scaling", "refinement" completes."""
        self.validate_params()
        classes = torch.as_tensor(classes, dtype=torch.long).cpu()
        if len(matrices) != len(classes):
            raise ValueError(f"{len(matrices)} feature matrices for {len(classes)} classes")
        if len(classes) == 0 or int(classes.min()) < 0 or int(classes.max()) >= len(head_weight):
            raise ValueError(f"class labels must be given and lie in 0..{len(head_weight) - 1}")
        if hasattr(self, "classes_") and bool(torch.isin(classes, self.classes_).any()):
            raise ValueError("partial_fit was given classes that are already fitted")
        done = on_stage or (lambda stage: None)
        too_small = [int(c) for c, A in zip(classes, matrices) if A.shape[0] < self.k]
        if too_small:
            raise ValueError(f"classes {too_small} have fewer feature positions than k={self.k} prototypes")

        v = head_weight.detach().float().cpu()[classes]
        nmf = discover(self.discovery, matrices, self.k, v, self.max_iter, self.tol, self.random_state, self.solver,
                       self.device)
        done("nmf")
        P = nmf.prototypes
        alpha = scale_prototypes(P, v)
        done("scaling")
        covariance = heatmap_covariance(matrices, P, residual(P, alpha, v))
        refined = {s: refine(s, P, alpha, v, matrices, covariance) for s in self.strategies}
        done("refinement")
        presence = torch.stack([
            torch.quantile((A.to(p) @ p.T)[:PRESENCE_POSITIONS], PRESENCE_QUANTILE, dim=0) for A, p in zip(matrices, P)
        ]).clamp_min(1e-12)
        self._append(classes, P, alpha, refined, nmf.relative_error, nmf.iterations, presence)
        return self

    def _reset(self) -> None:
        for name in [a for a in vars(self) if a.endswith("_")]:
            delattr(self, name)

    def _append(self, classes, P, alpha, refined, error, iterations, presence) -> None:
        def joined(name, new):
            return torch.cat([getattr(self, name), new]) if hasattr(self, name) else new

        before = getattr(self, "refined_by_strategy_", {})
        self.refined_by_strategy_ = {s: torch.cat([before[s], r]) if before else r for s, r in refined.items()}
        self.classes_ = joined("classes_", classes)
        self.prototypes_ = joined("prototypes_", P)
        self.alpha_ = joined("alpha_", alpha)
        self.feature_error_ = joined("feature_error_", error)
        self.n_iter_ = joined("n_iter_", iterations)
        self.presence_scale_ = joined("presence_scale_", presence)
        self.refined_ = self.refined_by_strategy_[self.strategy]

    # -- using the fitted model -------------------------------------------------------------------
    def head(self, head_weight: torch.Tensor, bias: torch.Tensor) -> PrototypeHead:
        """The head of all C classes with the fitted classes' rows rewritten as prototypes."""
        if not hasattr(self, "classes_"):
            raise ValueError("this PartPrototypes is not fitted yet: call fit first")
        return PrototypeHead.from_parts(head_weight, bias, self.classes_, self.refined_, self.prototypes_, self.presence_scale_)
