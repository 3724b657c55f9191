"""The method as one estimator: hyperparameters in the constructor, data in ``fit``, results in
attributes ending in ``_`` (the scikit-learn convention).

>>> model = PartPrototypes(k=3).fit(features, labels, head_weight, head_bias)   # features (N, H, W, D)
>>> model.refined_prototypes_.sum(dim=1)        # == head_weight[model.classes_]
>>> head = model.head()              # a PrototypeHead for all C classes

A scikit-learn estimator (``clone``, ``get_params``/``set_params``, ``repr``; parameters checked at
``fit``). Classes are independent, so ``partial_fit`` (same inputs as ``fit``) adds classes to a fitted
model: the pipeline feeds them in chunks to keep memory bounded however many classes there are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral, Real

import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .discovery import DEFAULT_DISCOVERY, PRESENCE_DAMPING, check_discovery, discover
from .head import PrototypeHead, read_cells
from .nmf import SOLVERS
from .refine import DEFAULT_STRATEGY, MAX_K, STRATEGIES, heatmap_covariance, refine, residual, scale_prototypes

#: "strongly present" for a part = this quantile of its heatmap over the training positions ...
PRESENCE_QUANTILE = 0.99
#: ... estimated on at most this many positions (torch.quantile refuses inputs above 2**24 elements)
PRESENCE_POSITIONS = 100_000


def feature_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, H, W, D) features -> the non-negative (N*H*W, D) matrix A that NMF factorises.

    Negative activations (GELU, SiLU) are set to zero, as the method prescribes; features without any are
    not copied (the NMF only reads them), so a matrix passed through again costs no memory."""
    A = features.reshape(-1, features.shape[-1])
    return A if A.numel() and bool(A.min() >= 0) else A.clamp_min(0)


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_k(k: int) -> None:
    if not _is_int(k) or not 1 <= k <= MAX_K:
        raise ValueError(f"k={k!r} is not sensible: choose between 1 and {MAX_K} prototypes per class")


def check_params(params: dict) -> None:
    """Raise ValueError, one clear line, for hyperparameters of :class:`PartPrototypes` that cannot work
    (also used on the parameters a run's manifest records)."""
    check_k(params["k"])
    check_discovery(params["discovery"])
    compare = params["compare"]
    if isinstance(compare, str) or not isinstance(compare, Sequence):
        raise ValueError(f"compare={compare!r} is not a list of strategies")
    for strategy in (params["strategy"], *compare):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if params["solver"] not in SOLVERS:
        raise ValueError(f"unknown solver {params['solver']!r}; choose one of {', '.join(SOLVERS)}")
    if not _is_int(params["random_state"]) or params["random_state"] < 0:
        raise ValueError(f"random_state={params['random_state']!r} must be a non-negative integer (the NMF seed)")
    if not _is_int(params["max_iter"]) or params["max_iter"] < 1:
        raise ValueError(f"max_iter={params['max_iter']!r} must be a positive integer")
    tol = params["tol"]
    if not isinstance(tol, Real) or isinstance(tol, bool) or not 0 <= float(tol) < float("inf"):
        raise ValueError(f"tol={tol!r} must be a finite number >= 0")
    try:
        torch.device(params["device"])
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device={params['device']!r} is not a torch device ({exc})") from None


def json_params(params: dict) -> dict:
    """``get_params()`` as JSON, for a run's manifest: ``compare`` a list, ``device`` a string."""
    return {**params, "compare": list(params["compare"]), "device": str(params["device"])}


def class_matrices(
    features: torch.Tensor | Sequence[torch.Tensor], labels: torch.Tensor | Sequence[int]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The classes in ``labels`` (sorted) and each one's non-negative feature matrix (:func:`feature_matrix`).

    ``features``: a (N, H, W, D) tensor of spatial features, or (N, D) of feature positions, or a sequence of
    such tensors (chunks, e.g. one per class: a class held in one chunk is never copied into a bigger tensor);
    ``labels``: (N,) the class of each image (or position), over all chunks in order."""
    chunks = [features] if isinstance(features, torch.Tensor) else list(features)
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    if not chunks or any(not isinstance(c, torch.Tensor) or c.ndim not in (2, 4) for c in chunks):
        raise ValueError("features must be a (N, H, W, D) or (N, D) tensor, or a list of such tensors")
    if len({c.shape[-1] for c in chunks}) != 1:
        raise ValueError(f"the chunks of features have different feature sizes {sorted({c.shape[-1] for c in chunks})}")
    if labels.ndim != 1 or sum(len(c) for c in chunks) != len(labels):
        raise ValueError(
            f"features must come with one label each: got {sum(len(c) for c in chunks)} rows, {tuple(labels.shape)} labels"
        )
    shape = (len(labels), *chunks[0].shape[1:])
    if len(labels) == 0:
        raise ValueError(f"no features to decompose (shape={shape})")
    if shape[-1] == 0:  # worded as scikit-learn words it
        raise ValueError(f"the features have 0 feature(s) (shape={shape}) while a minimum of 1 is required.")
    if not all(bool(torch.isfinite(c).all()) for c in chunks):
        raise ValueError("features hold NaN or inf values")
    classes = labels.unique()
    pieces: dict[int, list[torch.Tensor]] = {int(c): [] for c in classes}
    start = 0
    for chunk in chunks:
        own = labels[start : start + len(chunk)]
        start += len(chunk)
        for c in own.unique():
            pieces[int(c)].append(chunk if bool((own == c).all()) else chunk[(own == c).to(chunk.device)])
    return classes, [feature_matrix(p[0] if len(p) == 1 else torch.cat(p)) for p in pieces.values()]


class PartPrototypes(BaseEstimator):
    """Post-hoc part prototypes of a linear head (Tan, Zhou & Chen, ICML 2024).

    Parameters (stored unchanged; checked at ``fit``)
    ----------
    k : prototypes per class.
    strategy : how the residual of the head row is split among the prototypes (``refine.STRATEGIES``).
    solver : ``"hals"`` or ``"mu"`` for the per-class NMF.
    random_state : seed of the NMF initialisation (a non-negative integer).
    max_iter, tol : NMF stopping rule.
    compare : further strategies to refine with, for evaluation (``refined_by_strategy_``).
    device : where the NMF runs ("cpu", "cuda" or a ``torch.device``); results are on the CPU.
    discovery : how the prototypes are found (``discovery.DISCOVERIES``); ``"nmf"`` is the paper's NMF.

    Attributes (after ``fit``)
    --------------------------
    classes_ : (C',) class labels decomposed, in the order of every other attribute.
    n_features_in_ : D, the feature size of the training features and of the head.
    head_weight_, head_bias_ : (C, D) and (C,) the linear head that was decomposed (``head()`` rewrites it).
    nmf_prototypes_ : (C', k, D) the discovered (NMF) prototypes p_i.
    alpha_ : (C', k) least-squares scales of the prototypes to the head rows.
    refined_prototypes_ : (C', k, D) refined prototypes p~_i of ``strategy``; they sum to the head rows.
    refined_by_strategy_ : {strategy: (C', k, D)} for ``strategy`` and every ``compare`` strategy.
    feature_error_ : (C',) ||A - E P|| / ||A||.
    n_iter_ : (C',) NMF updates each class took.
    presence_scale_ : (C', k) the part map level of each part that counts as "strongly present".
    presence_damping_ : how the part maps read a cell (``head.read_cells``), the discovery's own.
    """

    # Fitted attributes read back by ``partial_fit`` (set only by fitting, so ``check_is_fitted`` still works).
    n_features_in_: int
    head_weight_: torch.Tensor
    head_bias_: torch.Tensor
    presence_damping_: float

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
    ) -> None:
        self.k = k
        self.strategy = strategy
        self.solver = solver
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol
        self.compare = compare
        self.device = device
        self.discovery = discovery

    def validate_params(self) -> None:
        """Raise ValueError for hyperparameters that cannot work (called by ``fit``; callers about to do
        expensive work first call it themselves)."""
        check_params(self.get_params(deep=False))

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.strategy, *self.compare)))

    # -- fitting ---------------------------------------------------------------------------------
    def fit(
        self,
        features: torch.Tensor | Sequence[torch.Tensor],
        labels: torch.Tensor | Sequence[int],
        head_weight: torch.Tensor,
        head_bias: torch.Tensor | None = None,
        *,
        on_stage: Callable[[str], None] | None = None,
    ) -> PartPrototypes:
        """Decompose the head rows of every class in ``labels``, forgetting any earlier fit.

        features (N, H, W, D) spatial features of the training images (or a list of chunks, see
        :func:`class_matrices`); labels (N,) their classes; head_weight (C, D) and head_bias (C,) the linear
        head whose rows ``labels`` index (the bias is only kept for ``head()``; zeros when not given).
        ``on_stage(name)`` is called as each of "nmf", "scaling", "refinement" completes."""
        self.validate_params()
        for name in [a for a in vars(self) if a.endswith("_")]:
            delattr(self, name)
        return self._fit_classes(features, labels, head_weight, head_bias, on_stage)

    def partial_fit(
        self,
        features: torch.Tensor | Sequence[torch.Tensor],
        labels: torch.Tensor | Sequence[int],
        head_weight: torch.Tensor,
        head_bias: torch.Tensor | None = None,
        *,
        on_stage: Callable[[str], None] | None = None,
    ) -> PartPrototypes:
        """Add the classes in ``labels`` to the model (the same inputs as ``fit``); the head must be the one
        of the earlier calls, and the classes new."""
        self.validate_params()
        return self._fit_classes(features, labels, head_weight, head_bias, on_stage)

    def _fit_classes(
        self,
        features: torch.Tensor | Sequence[torch.Tensor],
        labels: torch.Tensor | Sequence[int],
        head_weight: torch.Tensor,
        head_bias: torch.Tensor | None,
        on_stage: Callable[[str], None] | None,
    ) -> PartPrototypes:
        classes, matrices = class_matrices(features, labels)
        weight = head_weight.detach().float().cpu()
        bias = torch.zeros(len(weight)) if head_bias is None else head_bias.detach().float().cpu()
        D = matrices[0].shape[1]
        if weight.ndim != 2 or weight.shape[1] != D or bias.shape != (len(weight),):
            raise ValueError(f"the head {tuple(weight.shape)} + {tuple(bias.shape)} does not take {D} features")
        if int(classes.min()) < 0 or int(classes.max()) >= len(weight):
            raise ValueError(f"class labels must lie in 0..{len(weight) - 1}")
        if hasattr(self, "classes_"):
            if D != self.n_features_in_:
                raise ValueError(f"X has {D} features, but PartPrototypes is expecting {self.n_features_in_} features as input")
            if not (torch.equal(weight, self.head_weight_) and torch.equal(bias, self.head_bias_)):
                raise ValueError("partial_fit was given another head than the one the model was fitted with")
            if bool(torch.isin(classes, self.classes_).any()):
                raise ValueError("partial_fit was given classes that are already fitted")
            if (
                self.nmf_prototypes_.shape[1] != self.k
                or set(self.refined_by_strategy_) != set(self.strategies)
                or self.presence_damping_ != PRESENCE_DAMPING[self.discovery]
            ):
                raise ValueError("k, strategy, compare or discovery changed since the model was fitted: fit it again")
        done = on_stage or (lambda stage: None)
        too_small = [int(c) for c, A in zip(classes, matrices) if A.shape[0] < self.k]
        if too_small:
            raise ValueError(f"classes {too_small} have fewer feature positions than k={self.k} prototypes")

        v = weight[classes]
        nmf = discover(self.discovery, matrices, self.k, v, self.max_iter, self.tol, self.random_state, self.solver, self.device)
        done("nmf")
        P = nmf.prototypes
        alpha = scale_prototypes(P, v)
        done("scaling")
        covariance = heatmap_covariance(matrices, P, residual(P, alpha, v))
        refined = {s: refine(s, P, alpha, v, matrices, covariance) for s in self.strategies}
        done("refinement")
        damping = PRESENCE_DAMPING[self.discovery]
        presence = torch.stack(
            [
                torch.quantile(read_cells(A[:PRESENCE_POSITIONS].to(p), damping) @ p.T, PRESENCE_QUANTILE, dim=0)
                for A, p in zip(matrices, P)
            ]
        ).clamp_min(1e-12)
        self.n_features_in_, self.head_weight_, self.head_bias_ = D, weight, bias
        self.presence_damping_ = damping
        self._append(classes, P, alpha, refined, nmf.relative_error, nmf.iterations, presence)
        return self

    def _append(
        self,
        classes: torch.Tensor,
        P: torch.Tensor,
        alpha: torch.Tensor,
        refined: dict[str, torch.Tensor],
        error: torch.Tensor,
        iterations: torch.Tensor,
        presence: torch.Tensor,
    ) -> None:
        def joined(name: str, new: torch.Tensor) -> torch.Tensor:
            return torch.cat([getattr(self, name), new]) if hasattr(self, name) else new

        before = getattr(self, "refined_by_strategy_", {})
        self.refined_by_strategy_ = {s: torch.cat([before[s], r]) if before else r for s, r in refined.items()}
        self.classes_ = joined("classes_", classes)
        self.nmf_prototypes_ = joined("nmf_prototypes_", P)
        self.alpha_ = joined("alpha_", alpha)
        self.feature_error_ = joined("feature_error_", error)
        self.n_iter_ = joined("n_iter_", iterations)
        self.presence_scale_ = joined("presence_scale_", presence)
        self.refined_prototypes_ = self.refined_by_strategy_[self.strategy]

    # -- using the fitted model -------------------------------------------------------------------
    def head(self) -> PrototypeHead:
        """The head of all C classes with the fitted classes' rows rewritten as prototypes."""
        check_is_fitted(self, "classes_")
        return PrototypeHead.from_decomposition(
            self.head_weight_,
            self.head_bias_,
            self.classes_,
            self.refined_prototypes_,
            self.nmf_prototypes_,
            self.presence_scale_,
            self.presence_damping_,
        )
