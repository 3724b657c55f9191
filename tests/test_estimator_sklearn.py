"""``PartPrototypes`` is a scikit-learn estimator: scikit-learn's own estimator checks, and the same contract on
the estimator's real inputs (spatial features (N, H, W, D) of the sample photos and the Lite0 head).

Which of scikit-learn's checks (``sklearn.utils.estimator_checks``, legacy set) apply, and how they run:

- **On ``PartPrototypes`` as it is** (``DATA_FREE``), the checks that need no data: cloning, ``repr``, nothing set
  in ``__init__``, ``get_params`` invariance, ``set_params`` (stores anything, validates nothing), constructible
  defaults, no error in ``__init__``/``set_params``, a clear error when unfitted, tags and mixin order.
- **Every other check, on (N, D) arrays**, through ``OnArrays``: the checks call ``fit(X, y)``, while the method
  also needs the linear head it rewrites (``head_weight``, which scikit-learn cannot pass). ``OnArrays`` adds only
  that (a fixed random head with a row for each class in ``y``) and hands ``X`` over as (N, D) feature positions,
  an input ``fit`` accepts as it is. k = 1, since the checks' arrays have as few as 1 feature. So parameters not
  overwritten by ``fit``, ``fit`` returning self, ``n_features_in_`` (also its error from ``partial_fit``),
  ``check_is_fitted``, idempotence, pickling, order and subset invariance, read-only and F-ordered input, empty
  data, NaN and inf: all run and pass.
- **Do not apply** (``NOT_APPLICABLE``, each with its reason; run and expected to fail, strictly): the checks of
  the conversion of numpy/scipy inputs (sparse matrices and arrays, complex and object arrays), which
  ``PartPrototypes`` never receives (its inputs are float torch tensors: what ``OnArrays`` hands it), and
  ``check_fit_score_takes_y``, which calls ``partial_fit`` again with the classes already fitted: the classes
  are independent, so ``partial_fit`` adds new classes and refuses fitted ones rather than fitting them twice.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks
from sklearn.utils.validation import check_is_fitted

from protolib import PartPrototypes
from protolib.data.features import extract_features

DATA_FREE = [
    "check_estimator_cloneable",
    "check_estimator_repr",
    "check_no_attributes_set_in_init",
    "check_get_params_invariance",
    "check_set_params",
    "check_parameters_default_constructible",
    "check_do_not_raise_errors_in_init_or_set_params",
    "check_estimators_unfitted",
    "check_mixin_order",
    "check_estimator_tags_renamed",
    "check_valid_tag_types",
]
_CONVERSION = "converts numpy/scipy inputs; PartPrototypes takes float torch tensors and never receives these"
NOT_APPLICABLE = {
    "check_estimator_sparse_tag": _CONVERSION,
    "check_estimator_sparse_array": _CONVERSION,
    "check_estimator_sparse_matrix": _CONVERSION,
    "check_complex_data": _CONVERSION,
    "check_dtype_object": _CONVERSION,
    "check_fit_score_takes_y": "partial_fit adds new classes and refuses fitted ones; this check refits them",
}


class OnArrays(PartPrototypes):
    """``PartPrototypes`` with the ``fit(X, y)`` signature scikit-learn's checks call: X (N, D) feature positions,
    y their classes, and a fixed random head (a row for each class) as the linear head to rewrite."""

    def fit(self, X, y=None):
        X, y, head = self._arrays(X, y)
        return super().fit(X, y, head)

    def partial_fit(self, X, y=None):
        X, y, head = self._arrays(X, y)
        return super().partial_fit(X, y, head)

    @staticmethod
    def _arrays(X, y):
        X, y = torch.from_numpy(np.array(X, dtype=np.float32)), torch.from_numpy(np.array(y)).long()
        rows = int(y.max()) + 1 if len(y) else 1
        return X, y, torch.randn(rows, X.shape[-1], generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", DATA_FREE)
def test_the_data_free_checks_pass_on_the_estimator_itself(name):
    getattr(estimator_checks, name)("PartPrototypes", PartPrototypes())


def _name(check) -> str:
    return getattr(check, "func", check).__name__


CHECKS = list(
    estimator_checks.estimator_checks_generator(
        OnArrays(k=1), legacy=True, expected_failed_checks=NOT_APPLICABLE, mark="xfail", xfail_strict=True
    )
)


@pytest.mark.parametrize("estimator, check", CHECKS, ids=[_name((c.values if hasattr(c, "values") else c)[1]) for c in CHECKS])
def test_scikit_learns_checks(estimator, check):
    check(estimator)


def test_every_check_is_accounted_for():
    """A check scikit-learn adds (or renames) must be placed in one of the lists above, with its reason."""
    names = {_name(check) for _, check in estimator_checks.estimator_checks_generator(OnArrays(k=1), legacy=True)}
    assert set(DATA_FREE) <= names and set(NOT_APPLICABLE) <= names
    assert len(names) > len(DATA_FREE) + len(NOT_APPLICABLE) + 15  # most checks run on data


# -- the same contract on the estimator's own inputs --------------------------------------------------------------
CLASSES = {0: "n01440764", 217: "n02102040"}  # tench, English springer: their labels in the ImageNet head


@pytest.fixture(scope="module")
def features(lite0, data_dir, feature_cache):
    """Real spatial features (N, H, W, D) of 5 photos of each of two classes, and their labels."""
    feats = {
        c: extract_features(lite0, sorted((data_dir / "train" / wnid).iterdir())[:5], cache_dir=feature_cache).feats
        for c, wnid in CLASSES.items()
    }
    return list(feats.values()), torch.cat([torch.full((len(f),), c) for c, f in feats.items()])


def test_clone_keeps_every_parameter_unchanged_and_nothing_learned(features, lite0):
    device = torch.device("cpu")
    model = PartPrototypes(k=5, compare=["uniform"], device=device, discovery="evidence", tol=1e-3)
    assert model.compare == ["uniform"] and model.device is device  # __init__ converts nothing
    assert " ".join(repr(model).split()) == (
        "PartPrototypes(compare=['uniform'], device=device(type='cpu'), discovery='evidence', k=5, tol=0.001)"
    )
    chunks, labels = features
    model.fit(torch.cat(chunks), labels, lite0.head_weight, lite0.head_bias)
    copy = clone(model)
    assert copy.get_params() == model.get_params()  # device included (clone deep-copies each parameter)
    assert not hasattr(copy, "classes_") and hasattr(model, "classes_")
    assert copy.set_params(k=2, strategy="paper") is copy and (copy.k, copy.strategy) == (2, "paper")


@pytest.mark.parametrize(
    "params, message",
    [
        ({"k": 0}, "not sensible"),
        ({"k": 3.0}, "not sensible"),
        ({"strategy": "magic"}, "unknown strategy"),
        ({"compare": ["magic"]}, "unknown strategy"),
        ({"compare": "uniform"}, "not a list"),
        ({"solver": "als"}, "unknown solver"),
        ({"random_state": -1}, "random_state"),
        ({"random_state": None}, "random_state"),
        ({"max_iter": 0}, "max_iter"),
        ({"tol": float("nan")}, "tol"),
        ({"device": "abacus"}, "not a torch device"),
        ({"discovery": "magic"}, "unknown discovery"),
    ],
)
def test_parameters_are_checked_at_fit_not_before(features, lite0, params, message):
    model = PartPrototypes().set_params(**params)  # set_params stores anything
    chunks, labels = features
    with pytest.raises(ValueError, match=message):
        model.fit(chunks, labels, lite0.head_weight)
    with pytest.raises(ValueError, match=message):
        model.partial_fit(chunks, labels, lite0.head_weight)
    assert not hasattr(model, "classes_")


def test_partial_fit_takes_what_fit_takes_and_adds_classes(features, lite0):
    chunks, labels = features
    whole = PartPrototypes(k=3).fit(torch.cat(chunks), labels, lite0.head_weight, lite0.head_bias)
    split = PartPrototypes(k=3)
    with pytest.raises(NotFittedError):
        split.head()
    with pytest.raises(NotFittedError):
        check_is_fitted(split)
    n = len(chunks[0])
    split.partial_fit(chunks[0], labels[:n], lite0.head_weight, lite0.head_bias)
    assert split.classes_.tolist() == [0] and split.n_features_in_ == lite0.head_weight.shape[1]
    split.partial_fit([chunks[1]], labels[n:], lite0.head_weight, lite0.head_bias)  # a list of chunks, as fit takes
    check_is_fitted(split)
    assert split.classes_.tolist() == whole.classes_.tolist() == [0, 217]
    for name in ("nmf_prototypes_", "alpha_", "refined_prototypes_", "presence_scale_"):
        torch.testing.assert_close(getattr(split, name), getattr(whole, name), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="already fitted"):
        split.partial_fit(chunks[0], labels[:n], lite0.head_weight, lite0.head_bias)
    with pytest.raises(ValueError, match="another head"):
        split.partial_fit(chunks[0], labels[:n] + 1, lite0.head_weight * 2, lite0.head_bias)
    with pytest.raises(ValueError, match="X has 8 features, but PartPrototypes is expecting"):
        split.partial_fit(chunks[0][..., :8], labels[:n] + 1, lite0.head_weight[:, :8])


def test_head_needs_nothing_more_and_is_the_models_own_head(features, lite0):
    """``head()`` rewrites the head given at fit time: the logits are the Lite0 model's own, for all 1000 classes."""
    chunks, labels = features
    model = PartPrototypes(k=3).fit(chunks, labels, lite0.head_weight, lite0.head_bias)
    again = pickle.loads(pickle.dumps(model))
    feats = torch.cat(chunks)
    logits, contributions = again.head()(feats)
    linear = feats.mean(dim=(1, 2)) @ lite0.head_weight.T + lite0.head_bias
    assert logits.shape == (len(feats), 1000) and contributions.shape == (len(feats), 2, 3)
    assert float((logits - linear).abs().max()) <= 1e-4 * max(1.0, float(linear.abs().max()))
