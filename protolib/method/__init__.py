"""The method itself, tensors in and tensors out: per-class NMF, scaling and refinement, the estimator
that runs them, and the prototype head that rewrites a linear head as per-prototype contributions."""

from .estimator import PartPrototypes, check_k, feature_matrix
from .head import PrototypeHead
from .refine import DEFAULT_STRATEGY, MAX_K, STRATEGIES

__all__ = ["DEFAULT_STRATEGY", "MAX_K", "STRATEGIES", "PartPrototypes", "PrototypeHead", "check_k", "feature_matrix"]
