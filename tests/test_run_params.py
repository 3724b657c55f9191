"""``run_decomposition`` takes the estimator (or its parameters), and a run records them once, under ``params``
(since manifest version 2); runs saved as version 1 (the parameters also at the top, or only there) and as
version 2 (the prototypes' names under another key) still load."""

from __future__ import annotations

import json

import pytest
import torch

from protolib import PartPrototypes, load_run, run_decomposition, save_run
from protolib.runs.checks import manifest_problem
from protolib.runs.listing import checked_runs
from protolib.runs.schema import FORMAT, FORMAT_V1, FORMAT_V2, MANIFEST

CLASSES = ["n01440764", "n02102040"]  # tench, English springer


@pytest.fixture(scope="module")
def runs(lite0, data_dir, feature_cache):
    """The same decomposition from an estimator and from its parameters, and the estimator given."""
    estimator = PartPrototypes(k=2, strategy="uniform", random_state=3, compare=("paper",))
    common = dict(classes=CLASSES, images_per_class=4, cache_dir=feature_cache)
    by_estimator = run_decomposition(lite0, data_dir, estimator=estimator, **common)
    by_params = run_decomposition(lite0, data_dir, k=2, strategy="uniform", random_state=3, compare=("paper",), **common)
    return estimator, by_estimator, by_params


def test_the_estimator_or_its_parameters_make_the_same_run(runs):
    estimator, by_estimator, by_params = runs
    assert not hasattr(estimator, "classes_")  # fitted on a clone: the caller's estimator is left as it was
    assert by_estimator.params == by_params.params == {**estimator.get_params(), "compare": ["paper"], "device": "cpu"}
    assert (by_estimator.k, by_estimator.strategy, sorted(by_estimator.refined_by_strategy)) == (2, "uniform", ["paper", "uniform"])
    torch.testing.assert_close(by_estimator.nmf_prototypes, by_params.nmf_prototypes)
    for old in ("k", "strategy", "seed", "solver", "discovery"):  # recorded once
        assert old not in by_estimator.manifest


def test_a_wrong_parameter_is_refused_before_any_work(lite0, tmp_path):
    with pytest.raises(ValueError, match="seed"):  # the estimator's name is random_state
        run_decomposition(lite0, tmp_path / "nowhere", seed=1)
    with pytest.raises(ValueError, match="unknown strategy"):
        run_decomposition(lite0, tmp_path / "nowhere", estimator=PartPrototypes(strategy="magic"))


def _as_version_1(manifest: dict, with_params: bool) -> dict:
    """The manifest as version 1 wrote it: the parameters at the top, and (from when the estimator existed)
    its ``get_params()`` besides, without the device; runs before that had neither ``params`` nor ``discovery``."""
    params = dict(manifest["params"])
    older = {key: value for key, value in manifest.items() if key != "params"}
    older.update(format=FORMAT_V1, k=params["k"], strategy=params["strategy"], seed=params["random_state"], solver=params["solver"])
    if with_params:
        older.update(discovery=params["discovery"], params={k: v for k, v in params.items() if k != "device"})
    return older


@pytest.mark.parametrize("with_params", [True, False])
def test_runs_saved_as_version_1_still_load(runs, lite0, tmp_path, with_params):
    _, run, _ = runs
    path = save_run(run, tmp_path / "run")
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["format"] == FORMAT == "protoscope.run/3"
    older = _as_version_1(manifest, with_params)
    assert manifest_problem(older) is None
    (path / MANIFEST).write_text(json.dumps(older))
    assert [r.problem for r in checked_runs(tmp_path)] == [""]
    loaded = load_run(path, lite0)
    recorded = ("k", "strategy", "solver", "random_state") if not with_params else set(run.params) - {"device"}
    assert loaded.params == {key: value for key, value in run.params.items() if key in recorded}
    assert (loaded.k, loaded.strategy, loaded.discovery, loaded.params["random_state"]) == (2, "uniform", "nmf", 3)
    torch.testing.assert_close(loaded.head(lite0).refined_prototypes, run.head(lite0).refined_prototypes)
    save_run(loaded, path, overwrite=True)  # saved again: the current version
    again = json.loads((path / MANIFEST).read_text())
    assert again["format"] == FORMAT and again["params"]["random_state"] == 3 and "seed" not in again
    assert "unknown strategy 'magic'" in manifest_problem(older | {"strategy": "magic"})  # the top-level key is read


def test_runs_saved_as_version_2_still_load(runs, lite0, tmp_path):
    """Version 2 kept the prototypes' names under another key: they load as ``prototype_names``, are checked
    like them, and a save writes version 3."""
    _, run, _ = runs
    path = save_run(run.with_prototype_names({int(run.classes[0]): {1: "fins"}}), tmp_path / "run")
    manifest = json.loads((path / MANIFEST).read_text())
    names = manifest.pop("prototype_names")
    older = {**manifest, "format": FORMAT_V2, "prototype_labels": names}
    (path / MANIFEST).write_text(json.dumps(older))
    assert [r.problem for r in checked_runs(tmp_path)] == [""]
    loaded = load_run(path, lite0)
    assert loaded.prototype_names == {str(int(run.classes[0])): {"1": "fins"}}
    assert loaded.prototype_name_grid()[0] == ["", "fins"]
    save_run(loaded, path, overwrite=True)
    again = json.loads((path / MANIFEST).read_text())
    assert again["format"] == FORMAT and again["prototype_names"] == names and "prototype_labels" not in again
    bad = {**older, "prototype_labels": {str(int(run.classes[0])): {"7": "tail"}}}
    assert "names prototype '7'" in manifest_problem(bad)  # a version 2 run with bad names is damaged, as before
