"""Every discovery variant on the sample photos and the real Lite0 model: steps 2-3 stay exact and no
refined prototype flips, the choice is recorded with the run, and the CLI takes it."""

from __future__ import annotations

import json

import pytest
import torch

from protolib.cli import main
from protolib.evaluation.metrics import evaluate_run, training_matrices
from protolib.method import DEFAULT_STRATEGY, PartPrototypes
from protolib.method.discovery import DEFAULT_DISCOVERY, DISCOVERIES, PRESENCE_DAMPING, discover, evidence_weights
from protolib.pipeline import run_decomposition
from protolib.report.build_method import seed_stability_section
from protolib.runs import load_run, save_run
from protolib.runs.checks import manifest_problem

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # every discovery, end to end on the real model


@pytest.fixture(scope="module", params=DISCOVERIES)
def discovered(request, lite0, data_dir, feature_cache):
    run = run_decomposition(lite0, data_dir, images_per_class=8, k=3, cache_dir=feature_cache, discovery=request.param)
    return request.param, run


def test_every_discovery_keeps_the_model_exact_and_no_prototype_flips(discovered, lite0, data_dir, feature_cache):
    name, run = discovered
    assert run.discovery == name and run.manifest["params"]["discovery"] == name
    assert (run.nmf_prototypes >= 0).all()
    figures = evaluate_run(run, lite0, data_dir, "val", images_per_class=5, cache_dir=feature_cache)
    assert figures["max_abs_logit_diff"] <= 1e-4
    assert figures["top1_prototype"] == figures["top1_original"]
    fidelity = figures["signed_fidelity"][DEFAULT_STRATEGY]
    assert fidelity["flips"] == 0 and fidelity["min"] > 0, (name, fidelity)


def test_the_choice_travels_with_the_run(discovered, tmp_path, lite0):
    name, run = discovered
    path = save_run(run, tmp_path / "run")
    assert load_run(path, lite0).discovery == name
    manifest = json.loads((path / "manifest.json").read_text())
    assert load_run(path, lite0).presence_damping == manifest["presence_damping"] == PRESENCE_DAMPING[name]
    # runs made before the choice read as the paper's NMF, and those made before the reading as the paper's maps
    older = {key: value for key, value in manifest.items() if key != "presence_damping"}
    older["params"] = {key: value for key, value in manifest["params"].items() if key != "discovery"}
    assert manifest_problem(older) is None
    (path / "manifest.json").write_text(json.dumps(older))
    again = load_run(path, lite0)
    assert again.discovery == DEFAULT_DISCOVERY == "nmf" and again.presence_damping == 0.0
    assert "unknown discovery" in manifest_problem({**manifest, "params": {**manifest["params"], "discovery": "magic"}})
    # the reading is recorded as a number, so that a later change of the variant's default moves no saved map
    for bad in (-0.5, 1.5, True, "0.5", None):
        assert "presence_damping" in manifest_problem({**manifest, "presence_damping": bad}), bad


def test_evidence_weighting_finds_other_parts_from_the_cells_that_make_the_logit(lite0, data_dir, feature_cache):
    run = run_decomposition(lite0, data_dir, images_per_class=8, k=3, cache_dir=feature_cache)
    matrices = training_matrices(run, lite0, feature_cache)
    rows = lite0.head_weight.float()[run.classes]
    weights = evidence_weights(matrices[0], rows[0])
    evidence = matrices[0] @ rows[0]
    assert float(weights.max()) == pytest.approx(1.0) and (weights[evidence <= 0] == 0).all()
    assert torch.equal(weights.argsort(stable=True), evidence.clamp_min(0).argsort(stable=True))
    assert torch.equal(evidence_weights(matrices[0], -rows[0].abs()), torch.ones(len(matrices[0])))  # nothing to weigh by
    paper = discover("nmf", matrices, 3, rows).prototypes
    torch.testing.assert_close(paper, run.nmf_prototypes)  # "nmf" is exactly the paper's NMF the pipeline ran
    evidence_parts = discover("evidence", matrices, 3, rows).prototypes
    assert (evidence_parts >= 0).all() and not torch.allclose(evidence_parts, paper, atol=1e-3)
    with pytest.raises(ValueError, match="unknown discovery"):
        PartPrototypes(k=3, discovery="magic").validate_params()
    assert PartPrototypes(k=3).get_params()["discovery"] == "nmf"


def test_command_line_discovery(tmp_path, data_dir, feature_cache, capsys):
    out = tmp_path / "run"
    args = [
        "decompose",
        "--data",
        str(data_dir),
        "--classes",
        "n01440764",
        "n02102040",
        "--images-per-class",
        "4",
        "--k",
        "2",
        "--cache",
        str(feature_cache),
        "--out",
        str(out),
    ]
    assert main([*args, "--discovery", "evidence"]) == 0
    assert json.loads((out / "manifest.json").read_text())["params"]["discovery"] == "evidence"
    with pytest.raises(SystemExit) as exit_info:
        main([*args[:-1], str(tmp_path / "other"), "--discovery", "magic"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_the_report_refits_with_the_runs_own_discovery(discovered, lite0, feature_cache):
    """The report's Table 3 over k and its seed stability refit the run's discovery, from the head rows its
    refined prototypes sum to: with the run's seed that gives back the run's own prototypes."""
    name, run = discovered
    matrices = training_matrices(run, lite0, feature_cache)
    again = discover(
        name, matrices, run.k, run.refined_by_strategy[run.strategy].sum(dim=1), random_state=run.params["random_state"]
    )
    torch.testing.assert_close(again.prototypes, run.nmf_prototypes, atol=1e-4, rtol=1e-3)
    assert 0 < seed_stability_section(run, matrices, 2)["mean"] <= 1 + 1e-6


def test_unit_evidence_factorises_unit_length_cells_and_reads_its_maps_damped(lite0, data_dir, feature_cache):
    """``unit-evidence`` is the paper's NMF of the class's cells scaled to unit length and weighted by evidence, and
    its part maps (what the pages draw, the edit in space leaves out and the parts benchmark scores) read each cell
    as ``clamp(f) / ||clamp(f)||^0.5``, scaled so that 1 % of the class's training cells reach 1."""
    run = run_decomposition(lite0, data_dir, images_per_class=8, k=3, cache_dir=feature_cache, discovery="unit-evidence")
    matrices = training_matrices(run, lite0, feature_cache)
    rows = lite0.head_weight.float()[run.classes]
    by_hand = [A / A.norm(dim=1, keepdim=True).clamp_min(1e-12) * evidence_weights(A, v)[:, None] for A, v in zip(matrices, rows)]
    assert all(bool((W.norm(dim=1) <= 1 + 1e-5).all()) for W in by_hand)
    torch.testing.assert_close(discover("nmf", by_hand, 3, rows).prototypes, run.nmf_prototypes)
    assert run.presence_damping == 0.5
    head = run.head(lite0)
    for position, A in enumerate(matrices):  # A: the class's training cells, clamped
        cells = A / A.norm(dim=1, keepdim=True).clamp_min(1e-12) ** 0.5
        maps = cells @ (run.nmf_prototypes[position] / run.presence_scale[position][:, None]).T
        torch.testing.assert_close(head.presence(A[None, None], position)[0].permute(1, 2, 0)[0], maps)
        reached = (maps >= 1).float().mean(dim=0)
        assert bool(((reached > 0.005) & (reached < 0.02)).all()), reached  # the 0.99 quantile is the level 1
