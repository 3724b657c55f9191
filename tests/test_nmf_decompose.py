"""Batched NMF and the refinement strategies, on real features of the sample photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import NMF

from protolib.data.features import extract_features
from protolib.method import PartPrototypes, feature_matrix
from protolib.method.nmf import _init, batched_nmf
from protolib.method.refine import (
    ENERGY_PENALTY,
    MAX_CANCELLATION,
    OPTIMIZER_STEPS,
    STRATEGIES,
    _optimal_mixing,
    _signed_correlations,
    heatmap_covariance,
    orientation,
    refine,
    residual,
    scale_prototypes,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def position_labels(classes: list[int], matrices: list[torch.Tensor]) -> torch.Tensor:
    """The class of every row of the feature matrices: the estimator takes (N, D) feature positions too."""
    return torch.repeat_interleave(torch.tensor(classes), torch.tensor([len(A) for A in matrices]))


@pytest.fixture(scope="module")
def matrices(lite0, data_dir, feature_cache):
    """Real feature matrices of three classes, of unequal heights (12, 9 and 15 images)."""
    out = []
    for wnid, n in (("n01440764", 12), ("n02102040", 9), ("n03394916", 15)):
        paths = sorted((data_dir / "train" / wnid).iterdir())[:n]
        out.append(feature_matrix(extract_features(lite0, paths, cache_dir=feature_cache).feats))
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_batching_changes_nothing(matrices, solver, device):
    together = batched_nmf(matrices, 3, solver=solver, device=device)
    for c, A in enumerate(matrices):
        alone = batched_nmf([A], 3, solver=solver, device=device)
        assert torch.allclose(together.prototypes[c], alone.prototypes[0], rtol=1e-3, atol=1e-5)
        assert together.iterations[c] == alone.iterations[0]


def test_deterministic_for_a_seed(matrices):
    a, b = batched_nmf(matrices, 3, random_state=7), batched_nmf(matrices, 3, random_state=7)
    assert torch.equal(a.prototypes, b.prototypes)
    assert not torch.equal(a.prototypes, batched_nmf(matrices, 3, random_state=8).prototypes)


def test_reported_error_is_the_real_error(matrices):
    result = batched_nmf(matrices, 3, return_coefficients=True)
    for c, A in enumerate(matrices):
        error = (A - result.coefficients[c] @ result.prototypes[c]).norm() / A.norm()
        assert float(error) == pytest.approx(float(result.relative_error[c]), rel=1e-4)


@pytest.mark.parametrize("k", [3, 5])
def test_error_matches_or_beats_scikit_learn_from_the_same_start(matrices, k):
    ours = batched_nmf(matrices, k, tol=1e-4, max_iter=200)
    E0, P0 = _init(matrices, k, 0, max(A.shape[0] for A in matrices), torch.float32)
    for c, A in enumerate(matrices):
        X = A.numpy()
        errors = {}
        for solver in ("mu", "cd"):
            model = NMF(k, init="custom", solver=solver, tol=1e-4, max_iter=200)
            W = model.fit_transform(X, W=E0[c, : len(X)].numpy().copy(), H=P0[c].numpy().copy())
            errors[solver] = np.linalg.norm(X - W @ model.components_) / np.linalg.norm(X)
        ours_c = float(ours.relative_error[c])
        assert ours_c <= errors["mu"] + 1e-6, (ours_c, errors)  # the solver the method names
        assert ours_c <= errors["cd"] * 1.002, (ours_c, errors)  # within 0.2 % of sklearn's stricter-stopping cd


def test_bad_arguments_are_refused(matrices):
    with pytest.raises(ValueError, match="non-negative"):
        batched_nmf([-matrices[0]], 3)
    with pytest.raises(ValueError, match="solver"):
        batched_nmf(matrices, 3, solver="als")
    with pytest.raises(ValueError, match="not sensible"):
        PartPrototypes(k=50).partial_fit(matrices, position_labels([0, 1, 2], matrices), torch.randn(3, matrices[0].shape[1]))


def test_scaling_is_the_least_squares_solution(matrices, lite0):
    P = batched_nmf(matrices, 3).prototypes
    v = lite0.head_weight[[0, 217, 566]]
    alpha = scale_prototypes(P, v)
    reference = torch.linalg.lstsq(P.double().transpose(1, 2), v.double().unsqueeze(-1)).solution.squeeze(-1)
    assert torch.allclose(alpha.double(), reference, rtol=1e-4, atol=1e-6)
    # the residual is orthogonal to every prototype
    R = residual(P, alpha, v)
    assert (torch.einsum("ckd,cd->ck", P, R).abs() / (P.norm(dim=-1) * R.norm(dim=-1, keepdim=True))).max() < 1e-4


@pytest.mark.parametrize("k", [1, 2, 3, 10])
def test_every_strategy_sums_to_the_head_exactly(matrices, lite0, k):
    v = lite0.head_weight[[0, 217, 566]]
    model = PartPrototypes(k=k, compare=STRATEGIES).partial_fit(
        matrices, position_labels([0, 217, 566], matrices), lite0.head_weight
    )
    for strategy in STRATEGIES:
        refined = model.refined_by_strategy_[strategy]
        assert refined.shape == (3, k, v.shape[1])
        # float precision of the numbers summed ("proportional" can blow up when sum(alpha) ~ 0)
        assert (refined.sum(dim=1) - v).abs().max() <= 1e-6 * max(1.0, float(refined.abs().max())), strategy


def test_strategies_split_the_residual_as_documented(matrices, lite0):
    v = lite0.head_weight[[0, 217, 566]]
    P = batched_nmf(matrices, 3).prototypes
    alpha = scale_prototypes(P, v)
    R = residual(P, alpha, v)
    uniform = refine("uniform", P, alpha, v)
    assert torch.allclose(uniform - alpha.unsqueeze(-1) * P, (R / 3).unsqueeze(1).expand_as(P), atol=1e-6)
    proportional = refine("proportional", P, alpha, v)
    share = alpha / alpha.sum(dim=1, keepdim=True)
    assert torch.allclose(proportional - alpha.unsqueeze(-1) * P, share.unsqueeze(-1) * R.unsqueeze(1), atol=1e-5)
    with pytest.raises(ValueError, match="training features"):
        refine("optimized", P, alpha, v)


# -- numerics: degenerate features and prototypes ---------------------------------------------------
def _degenerate(case: str) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    D = 48
    if case == "rank-1":  # every position a multiple of one vector
        return [torch.rand(200, 1, generator=generator) * torch.rand(D, generator=generator) for _ in range(2)]
    if case == "all-zero":
        return [torch.zeros(200, D), torch.zeros(150, D)]
    raise ValueError(case)


@pytest.mark.parametrize("case", ["rank-1", "all-zero"])
@pytest.mark.parametrize("k", [1, 3])
def test_every_strategy_stays_finite_and_exact_on_degenerate_features(case, k):
    matrices = _degenerate(case)
    head = torch.randn(4, matrices[0].shape[1], generator=torch.Generator().manual_seed(1))
    model = PartPrototypes(k=k, compare=STRATEGIES).partial_fit(matrices, position_labels([0, 2], matrices), head)
    for strategy, refined in model.refined_by_strategy_.items():
        assert torch.isfinite(refined).all(), (case, strategy)
        assert (refined.sum(dim=1) - head[[0, 2]]).abs().max() <= 1e-4, (case, strategy)
    assert torch.isfinite(model.alpha_).all()


def test_near_collinear_prototypes_keep_alpha_sane_and_every_strategy_exact(matrices, lite0):
    """Two nearly identical prototypes once sent alpha to +-4e5 and broke exactness after the float32 cast:
    the guarded scaling keeps sum_i |alpha_i| |p_i| bounded, and the residual keeps the sum exact."""
    P = batched_nmf(matrices, 3).prototypes
    P[:, 1] = P[:, 0] * (1 + 1e-6 * torch.randn(P.shape[0], P.shape[2], generator=torch.Generator().manual_seed(0)))
    v = lite0.head_weight[[0, 217, 566]]
    alpha = scale_prototypes(P, v)
    spread = (alpha.abs() * P.norm(dim=-1)).sum(dim=1)
    assert (spread <= MAX_CANCELLATION * v.norm(dim=1) + 1e-4).all(), spread
    for strategy in STRATEGIES:
        refined = refine(strategy, P, alpha, v, matrices)
        assert torch.isfinite(refined).all(), strategy
        assert (refined.sum(dim=1) - v).abs().max() <= 1e-4, strategy


def test_optimized_is_never_worse_than_the_closed_form_on_training_data(matrices, lite0):
    """The optimum of a class is kept only if it beats the variance split on the training positions in mean
    and in its worst prototype; otherwise the class keeps the variance split. A penalty that rewards blowing
    the heatmap energy up drives the optimizer astray: then every class must fall back."""
    v = lite0.head_weight[[0, 217, 566]]
    P = batched_nmf(matrices, 3).prototypes
    alpha = scale_prototypes(P, v)
    G = heatmap_covariance(matrices, P, residual(P, alpha, v))
    sign = orientation(alpha).double()
    variance = refine("variance", P, alpha, v, covariance=G)
    mixing = {
        name: _optimal_mixing(alpha, G, penalty, OPTIMIZER_STEPS)
        for name, penalty in (("default", ENERGY_PENALTY), ("astray", -50.0))
    }
    start = _optimal_mixing(alpha, G, ENERGY_PENALTY, steps=0)
    for name, Q in mixing.items():
        ours, closed = _signed_correlations(Q, G.double(), sign), _signed_correlations(start, G.double(), sign)
        kept = ~torch.isclose(Q, start).all(dim=(1, 2))
        assert (ours.sum(1)[kept] > closed.sum(1)[kept]).all() and (ours.min(1).values[kept] >= closed.min(1).values[kept]).all()
        if name == "astray":
            assert not kept.any()
    torch.testing.assert_close(refine("optimized", P, alpha, v, covariance=G).sum(dim=1), variance.sum(dim=1))


def test_the_estimator_rewrites_a_linear_head_exactly():
    """``from protolib import PartPrototypes`` on generated non-negative features (N, H, W, D) and a random head:
    the refined prototypes sum to the head rows, ``.head()`` gives the linear model's logits, and the
    learned state and the hyperparameters are where scikit-learn's conventions put them."""
    from protolib import PartPrototypes as Public

    generator = torch.Generator().manual_seed(0)
    features = torch.rand(24, 5, 5, 32, generator=generator) ** 2
    labels = torch.tensor([1, 4, 6]).repeat(8)
    weight, bias = torch.randn(7, 32, generator=generator), torch.randn(7, generator=generator)
    model = Public(k=3, random_state=0).fit(features, labels, weight, bias)
    assert model.classes_.tolist() == [1, 4, 6]
    assert model.nmf_prototypes_.shape == model.refined_prototypes_.shape == (3, 3, 32) and model.alpha_.shape == (3, 3)
    assert (model.nmf_prototypes_ >= 0).all() and (model.n_iter_ > 0).all()
    assert (model.refined_prototypes_.sum(dim=1) - weight[model.classes_]).abs().max() <= 1e-4
    logits, contributions = model.head()(features)
    linear = features.mean(dim=(1, 2)) @ weight.T + bias
    assert (logits - linear).abs().max() <= 1e-4 and contributions.shape == (24, 3, 3)
    assert model.get_params() == {
        "k": 3,
        "strategy": "optimized",
        "solver": "hals",
        "random_state": 0,
        "max_iter": 200,
        "tol": 1e-4,
        "compare": (),
        "device": "cpu",
        "discovery": "nmf",
    }
    with pytest.raises(ValueError, match="not fitted"):
        Public().head()
