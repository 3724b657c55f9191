"""The ground-truth parts benchmark: generated data, a PartsNet trained under a fixed protocol (stop on
val accuracy), the method's prototypes scored with ProtoEval against the known part keypoints on the maps
the app shows, next to k-means and PCA baselines, at k = true and true + 2, over seeds with intervals.

CI-sized: 3 classes, 64 px, a few dozen images, 2 seeds (about 10 s). The full run is
``python -m protolib parts-benchmark``; its figures are in the README, not asserted here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

from protolib.benchmarks.baselines import kmeans_prototypes, pca_prototypes
from protolib.benchmarks.parts import (
    BenchConfig,
    _test_classes,
    mean_t_interval,
    prepare_data,
    prepare_model,
    run_parts_benchmark_seeds,
)
from protolib.benchmarks.parts_methods import METHODS, READINGS, VARIANTS, method_prototypes
from protolib.benchmarks.parts_tables import discovery_table, headline_table
from protolib.benchmarks.toy_model import to_input, train_parts_net
from protolib.cli import main
from protolib.data.synthetic import make_parts_dataset, read_image_folder
from protolib.evaluation.metrics import evaluate_run
from protolib.evaluation.part_scores import protoeval_scores, prototype_maps
from protolib.evaluation.protoeval import upsampled_argmax
from protolib.method.discovery import DISCOVERIES
from protolib.runs import load_run

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = BenchConfig(
    num_classes=3,
    size=64,
    train_per_class=40,
    val_per_class=20,
    test_per_class=12,
    decompose_per_class=16,
    target_val_accuracy=0.9,
    max_epochs=4,
)
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def bench(one_thread, tmp_path_factory):
    out = tmp_path_factory.mktemp("parts-bench")
    return out, run_parts_benchmark_seeds(out, SMALL, seeds=SEEDS)


def _figures(results):
    for label, per_method in results["scores_by_k"].items():
        for method, per_reading in per_method.items():
            for reading, figures in per_reading.items():
                for name, figure in figures.items():
                    yield (label, method, reading, name), figure


def test_results_structure_intervals_and_per_seed_values(bench):
    root, results = bench
    assert json.loads((root / "results.json").read_text()) == json.loads(json.dumps(results))
    assert results["seeds"] == list(SEEDS) and results["headline_reading"] == "maps"
    assert "0.9" in results["protocol"] and "class labels only" in results["protocol"]
    assert set(results["scores_by_k"]) == {"true", "true+2"}
    n = 0
    for (label, method, reading, name), figure in _figures(results):
        n += 1
        assert method in METHODS and reading in READINGS and name in ("consistency", "stability")
        per_seed = [results["per_seed"][str(s)]["scores_by_k"][label][method][reading][name] for s in SEEDS]
        assert figure["per_seed"] == {str(s): v for s, v in zip(SEEDS, per_seed)} and figure["n"] == len(SEEDS)
        assert figure["mean"] == pytest.approx(np.mean(per_seed))
        low, high = figure["ci95"]
        assert 0 <= low <= figure["mean"] <= high <= 100 and all(0 <= v <= 100 for v in per_seed)
    assert n == 2 * len(METHODS) * len(READINGS) * 2
    for seed in SEEDS:  # k = parts and parts + 2: 3 classes of 4, 3 and 4 parts
        alphas = results["per_seed"][str(seed)]["alphas"]
        assert alphas["true"]["prototypes"] == 11 and alphas["true+2"]["prototypes"] == 17
        assert (root / f"seed-{seed}" / "true" / "run-k3").is_dir() and (root / f"seed-{seed}" / "true+2" / "run-k6").is_dir()
    table = headline_table(results)
    assert table.count("\n") == 2 + 2 * len(METHODS) - 1 and "NMF part maps" in table and "true+2" in table


def test_every_discovery_is_a_method_with_its_head_error_and_prototypes_only_accuracy(bench):
    """Each discovery variant is decomposed, saved and scored beside the paper's NMF; its head error is the
    runs' own, and "prototypes only" is top-1 with every head row replaced by sum alpha p."""
    root, results = bench
    assert set(VARIANTS) == set(DISCOVERIES) - {"nmf"} and VARIANTS and set(VARIANTS) <= set(METHODS)
    out = root / "seed-0"
    data = prepare_data(out, SMALL)
    backbone, _ = prepare_model(out, data, SMALL, log=print)
    for label in ("true", "true+2"):
        per_seed = results["per_seed"]["0"]["discovery_by_k"][label]
        assert set(per_seed) == set(DISCOVERIES) and set(results["discovery_by_k"][label]) == set(DISCOVERIES)
        for name in DISCOVERIES:
            runs = [
                load_run(p, backbone)
                for p in sorted((out / label).iterdir())
                if p.name.startswith("run-k") and p.name[5:].partition("-")[2] == ("" if name == "nmf" else name)
            ]
            assert runs and all(run.discovery == name for run in runs)
            errors = torch.cat([run.head_error(backbone.head_weight) for run in runs])
            assert per_seed[name]["head_error"] == pytest.approx(float(errors.mean()), rel=1e-5)
            assert 0 <= per_seed[name]["prototypes_only"] <= 100 and per_seed[name]["top1"] >= 50
    run = load_run(out / "true" / f"run-k4-{VARIANTS[0]}", backbone)
    methods = method_prototypes(backbone, [load_run(out / "true" / "run-k4", backbone)], out / "features", 0, {VARIANTS[0]: [run]})
    torch.testing.assert_close(methods[VARIANTS[0]][int(run.classes[0])], run.head(backbone).part_vectors[0])
    assert not torch.allclose(methods[VARIANTS[0]][int(run.classes[0])], methods["nmf"][int(run.classes[0])])
    table = discovery_table(results)
    assert table.count("\n") == 1 + 2 * len(DISCOVERIES) and "the paper's NMF" in table


def test_each_discovery_is_scored_on_the_part_maps_its_runs_draw(bench):
    """The headline reading scores a discovery's part maps as the app draws them: ``unit-evidence``'s read with its
    runs' presence damping (``clamp(f) / ||clamp(f)||^0.5 . part``), written out here."""
    root, results = bench
    out = root / "seed-0"
    data = prepare_data(out, SMALL)
    backbone, _ = prepare_model(out, data, SMALL, log=print)
    runs = [load_run(p, backbone) for p in sorted((out / "true").glob("run-k*-unit-evidence"))]
    assert len(runs) == 2 and all(run.presence_damping == 0.5 for run in runs)
    parts = {c: v for run in runs for c, v in zip(run.classes.tolist(), run.head(backbone).part_vectors)}
    x = to_input([s.image for s in read_image_folder(data, "test")[:4]])
    with torch.no_grad():
        spatial = backbone.spatial_features(x).float()  # (N, D, h, w)
    cells = spatial.clamp_min(0)
    by_hand = torch.einsum("ndhw,kd->nkhw", cells / cells.norm(dim=1, keepdim=True).clamp_min(1e-12) ** 0.5, parts[0])
    torch.testing.assert_close(prototype_maps(spatial, parts[0], "presence", 0.5), by_hand)
    classes = _test_classes(data, SMALL.num_classes)
    scored = protoeval_scores(backbone, classes, {"unit-evidence": parts}, ("presence",), seed=0, damping={"unit-evidence": 0.5})
    assert results["per_seed"]["0"]["scores_by_k"]["true"]["unit-evidence"]["maps"] == scored["unit-evidence"]["presence"]


def test_mean_interval_is_a_t_interval():
    values = [70.0, 80.0, 90.0, 75.0, 85.0]
    summary = mean_t_interval(values)
    half = stats.t.ppf(0.975, 4) * np.std(values, ddof=1) / np.sqrt(5)
    assert summary["mean"] == 80.0 and summary["ci95"] == pytest.approx([80 - half, 80 + half])
    assert mean_t_interval([99.0, 100.0])["ci95"][1] == 100.0  # clipped to what a % can be
    assert mean_t_interval([50.0])["ci95"] is None


def test_training_stops_at_the_val_accuracy_target(bench):
    """The protocol stops on class accuracy alone: the first epoch whose val accuracy reaches the target,
    and with the same seed the schedule does not depend on where it stops."""
    train, val = make_parts_dataset(24, seed=0, size=48, num_classes=2), make_parts_dataset(10, seed=1, size=48, num_classes=2)
    history = []
    _, last = train_parts_net(
        train,
        val,
        epochs=5,
        seed=3,
        target_accuracy=1.01,  # never reached: all 5 epochs
        progress=lambda e, n, loss, acc: history.append(acc),
    )
    assert len(history) == 5 and last == history[-1]
    target = max(history[1:]) if max(history[1:]) > history[0] else max(history)  # prefer one first met after epoch 1
    first = next(e for e, acc in enumerate(history, 1) if acc >= target)
    stopped = []
    _, accuracy = train_parts_net(
        train, val, epochs=5, seed=3, target_accuracy=target, progress=lambda e, n, loss, acc: stopped.append(acc)
    )
    assert stopped == history[:first] and accuracy == history[first - 1] >= target
    # the benchmark's seeds followed the same rule, and say how long they trained
    _, results = bench
    for seed in SEEDS:
        model = results["per_seed"][str(seed)]["model"]
        by_epoch = model["val_accuracy_by_epoch"]
        assert model["epochs"] == len(by_epoch) <= SMALL.max_epochs and model["val_accuracy"] == by_epoch[-1]
        assert all(acc < SMALL.target_val_accuracy for acc in by_epoch[:-1])
        assert model["reached_target"] == (by_epoch[-1] >= SMALL.target_val_accuracy)
        assert model["reached_target"] or model["epochs"] == SMALL.max_epochs


def test_headline_maps_are_the_apps_part_maps_and_the_oriented_heatmaps(bench):
    """NMF is read from exactly the maps PrototypeHead.presence draws, the refined prototypes from the head's
    heatmaps turned by sign(alpha), and the baselines from f . p."""
    root, _ = bench
    out = root / "seed-0"
    data = prepare_data(out, SMALL)
    backbone, training = prepare_model(out, data, SMALL, log=print)
    assert training["reused"] and backbone.name.startswith("parts_net:")
    run = load_run(out / "true" / "run-k4", backbone)
    head = run.head(backbone)
    methods = method_prototypes(backbone, [run], out / "features", seed=0)
    assert READINGS["maps"] == {
        "nmf": "presence",
        "refined": "heatmap",
        "kmeans": "heatmap",
        "kmeans-damped": "presence",  # the same centroids, read as unit-evidence's part maps are
        "pca": "heatmap",
        **dict.fromkeys(VARIANTS, "presence"),
    }
    assert all(methods["kmeans-damped"][c] is methods["kmeans"][c] for c in methods["kmeans"])
    sign = torch.where(run.alpha < 0, -1.0, 1.0)
    samples = read_image_folder(data, "test")
    for c, label in enumerate(run.classes.tolist()):
        x = to_input([s.image for s in samples if s.label == label][:6])
        with torch.no_grad():
            f = backbone.spatial_features(x)
        shown = head.presence(f.permute(0, 2, 3, 1), c)
        read = prototype_maps(f, methods["nmf"][label], "presence")
        torch.testing.assert_close(read, shown)
        assert np.array_equal(upsampled_argmax(read, SMALL.size), upsampled_argmax(shown, SMALL.size))
        torch.testing.assert_close(methods["refined"][label], run.refined_prototypes[c] * sign[c].unsqueeze(-1))
        torch.testing.assert_close(
            prototype_maps(f, methods["refined"][label]), head.heatmaps(f.permute(0, 2, 3, 1), c) * sign[c].view(1, -1, 1, 1)
        )
    figures = evaluate_run(run, backbone, data, "val", cache_dir=out / "features")  # the runs stay exact
    assert figures["max_abs_logit_diff"] <= 1e-4 and figures["top1_prototype"] == figures["top1_original"]


def test_prototype_maps_and_readings():
    P = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])  # share a component, as NMF prototypes do
    f = (2 * P[0] + 3 * P[1]).view(1, 3, 1, 1)
    torch.testing.assert_close(prototype_maps(f, P, "coefficients").flatten(), torch.tensor([2.0, 3.0]))
    torch.testing.assert_close(prototype_maps(f, P).flatten(), torch.tensor([7.0, 8.0]))  # heatmaps mix them
    g = torch.tensor([-1.0, 2.0, 0.5]).view(1, 3, 1, 1)
    torch.testing.assert_close(prototype_maps(g, P, "presence").flatten(), torch.tensor([2.0, 2.5]))  # clamp(f) . p
    damped = torch.tensor([2.0, 2.5]) / 4.25**0.25  # clamp(f) / ||clamp(f)||^0.5 . p, ||clamp(f)||^2 = 4 + 0.25
    torch.testing.assert_close(prototype_maps(g, P, "presence", damping=0.5).flatten(), damped)
    torch.testing.assert_close(prototype_maps(g, P, "heatmap", damping=0.5), prototype_maps(g, P))  # heatmaps never are
    with pytest.raises(ValueError, match="unknown map"):
        prototype_maps(f, P, "nope")
    with pytest.raises(ValueError, match="names methods"):
        protoeval_scores(None, iter(()), {"a": {}, "b": {}}, {"maps": {"a": "heatmap"}})


def test_baseline_prototypes():
    torch.manual_seed(0)
    centres = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    A = (centres.repeat_interleave(50, dim=0) + 0.1 * torch.randn(150, 3)).clamp_min(0)
    found = kmeans_prototypes(A, 3, seed=0)
    assert torch.cdist(found, centres).min(dim=0).values.max() < 0.1
    directions = pca_prototypes(A, 2)
    torch.testing.assert_close(directions @ directions.T, torch.eye(2), atol=1e-5, rtol=0)
    assert (A.mean(dim=0) @ directions.T > 0).all()  # signed towards the data


def test_command_line(monkeypatch, tmp_path, capsys, bench):
    seen = {}
    _, results = bench

    def fake(out, cfg, seeds, log):
        seen.update(out=out, cfg=cfg, seeds=seeds)
        return results

    monkeypatch.setattr("protolib.benchmarks.parts.run_parts_benchmark_seeds", fake)
    assert main(["parts-benchmark", "--out", str(tmp_path)]) == 0
    assert seen == {"cfg": BenchConfig(), "out": str(tmp_path), "seeds": [0, 1, 2, 3, 4]}
    printed = capsys.readouterr().out
    assert printed.startswith(f"Protocol: {results['protocol']}") and headline_table(results) in printed
    assert discovery_table(results) in printed
    assert (
        main(
            [
                "parts-benchmark",
                "--out",
                str(tmp_path),
                "--seeds",
                "5",
                "6",
                "--k-offsets",
                "0",
                "1",
                "--target-accuracy",
                "0.95",
                "--max-epochs",
                "6",
            ]
        )
        == 0
    )
    assert seen["cfg"] == BenchConfig(k_offsets=(0, 1), target_val_accuracy=0.95, max_epochs=6)
    assert seen["seeds"] == [5, 6]
