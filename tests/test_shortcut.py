"""The shortcut benchmark: data with groups and masks, a model that takes the shortcut, the repairs and
what shortcut.json reports (one seed, tiny data, a few epochs)."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from protolib import cli
from protolib.backbones import load_backbone
from protolib.backbones.parts_net import FEATURE_DIM
from protolib.benchmarks.dfr import l1_logistic_regression
from protolib.benchmarks.mask_rule import mask_rule_scales
from protolib.benchmarks.prototype_scales import fit_scales, scales_changed
from protolib.benchmarks.shortcut import run_shortcut_benchmark
from protolib.benchmarks.shortcut_config import METHODS, PROTOTYPE_METHODS, ShortcutConfig
from protolib.benchmarks.shortcut_demo import DEMO_RUN, build_shortcut_demo
from protolib.benchmarks.shortcut_splits import grouped_features, object_cells_logits
from protolib.config import check_data_folder
from protolib.data.synthetic import class_names
from protolib.data.synthetic_shortcut import (
    background_names,
    group_name,
    make_balanced_shortcut_dataset,
    make_shortcut_dataset,
    mask_path,
    read_groups,
)
from protolib.evaluation.intervention import group_accuracy
from protolib.method.head import PrototypeHead
from protolib.runs import load_run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ShortcutConfig(
    num_classes=3,
    size=64,
    train_per_class=40,
    heldout_per_class=12,
    labels_per_group=4,
    test_per_group=4,
    epochs=3,
    fit_steps=50,
    dfr_halves=2,
)
SPLITS = ("train", "heldout", "val", "test")


@pytest.fixture(scope="module")
def bench(one_thread, tmp_path_factory):
    out = tmp_path_factory.mktemp("shortcut-bench")
    return out, run_shortcut_benchmark(out, TINY, seeds=1)


# -- data ------------------------------------------------------------------------------------------------
def test_groups_csv_and_masks_are_written_and_consistent(bench):
    out, _ = bench
    data = out / "data"
    with open(data / "groups.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["file", "split", "class", "background", "group"]
        rows = list(reader)
    images = {p.relative_to(data).as_posix() for s in SPLITS for p in (data / s).glob("*/*.png")}
    assert {r["file"] for r in rows} == images and len(rows) == len(images)
    assert read_groups(data) == {r["file"]: r for r in rows}
    names, backgrounds = class_names(3), background_names(3)
    for r in rows:
        split, folder, _ = r["file"].split("/")
        assert (r["split"], r["class"]) == (split, folder) and r["background"] in backgrounds
        assert r["group"] == group_name(r["class"], r["background"])
    for split, n in (("val", TINY.labels_per_group), ("test", TINY.test_per_group)):  # group-balanced
        counts = {}
        for r in rows:
            if r["split"] == split:
                counts[r["group"]] = counts.get(r["group"], 0) + 1
        assert counts == {group_name(c, b): n for c in names for b in backgrounds}
    train = [r for r in rows if r["split"] == "train"]
    own = np.mean([names.index(r["class"]) == backgrounds.index(r["background"]) for r in train])
    assert 0.85 <= own < 1  # spurious 0.95: mostly the class's own background, not always

    grey_inside = []
    for r in rows[:: max(1, len(rows) // 40)]:
        image = cv2.imread(str(data / r["file"]))
        mask = cv2.imread(str(mask_path(data, r["file"])), cv2.IMREAD_GRAYSCALE)
        assert mask is not None and mask.shape == image.shape[:2] and set(np.unique(mask)) == {0, 255}
        assert 0.05 < (mask > 0).mean() < 0.6  # object and background both there
        grey = (np.abs(image.astype(int) - 118) <= 8).all(axis=-1)  # the object's grey body, hub and arms
        grey_inside.append((grey & (mask > 0)).sum() / max(1, grey.sum()))
    assert np.mean(grey_inside) > 0.9  # the mask covers the object drawn in the photo


def test_generators_place_backgrounds_as_promised():
    balanced = make_balanced_shortcut_dataset(2, seed=3, size=48, num_classes=3)
    assert [(s.label, s.background) for s in balanced] == [(c, b) for c in range(3) for b in range(3) for _ in range(2)]
    assert all(s.object_mask.shape == (48, 48) and s.object_mask.dtype == bool for s in balanced)
    assert all(s.background == s.label for s in make_shortcut_dataset(3, 1, 48, 3, spurious=1.0))
    assert all(s.background != s.label for s in make_shortcut_dataset(3, 1, 48, 3, spurious=0.0))
    again = make_balanced_shortcut_dataset(2, seed=3, size=48, num_classes=3)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(balanced, again, strict=True))


# -- the model and the repairs ---------------------------------------------------------------------------
def test_the_trained_model_takes_the_shortcut(bench):
    _, results = bench
    original = results["methods"]["original"]
    assert original["worst_group_acc"] < original["mean_acc"]


def test_mask_rule_finds_background_prototypes_and_serves_the_app(bench):
    out, results = bench
    assert results["background_prototypes_found"] > 0
    run = load_run(out / "seed-0" / "run")
    backbone = load_backbone(run.manifest["backbone"])  # the run names its model: parts_net:<file>
    assert backbone.name == "parts_net:" + str((out / "seed-0" / "parts_net.safetensors").resolve())
    scales = mask_rule_scales(backbone, run, out / "data", "heldout", TINY.mask_photos_per_class, TINY.mask_threshold)
    assert scales.shape == (3, run.k) and set(scales.unique().tolist()) <= {0.0, 1.0}
    assert scales.tolist() == results["per_seed"]["0"]["scales"]["prototypes_by_mask"]
    assert int((scales == 0).sum()) == sum(results["per_seed"]["0"]["background_prototypes"].values())
    edited = run.with_scale(scales, "background prototypes switched off")
    assert torch.equal(edited.scale, scales)


def test_group_accuracy_on_a_hand_made_example():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [1.0, 0.0], [0.0, 2.0], [0.0, 5.0]])
    labels = torch.tensor([0, 1, 1, 0, 0, 1])  # predictions 0, 1, 0, 0, 1, 1: right, right, wrong, right, wrong, right
    groups = ["a", "a", "b", "b", "c", "c"]
    acc = group_accuracy(logits, labels, groups)
    assert set(acc) == {"mean", "worst_group", "per_group"}
    assert acc["per_group"] == {"a": 1.0, "b": 0.5, "c": 0.5} and acc["worst_group"] == 0.5
    assert acc["mean"] == pytest.approx(4 / 6)
    by_id = group_accuracy(logits, labels.numpy(), torch.tensor([0, 0, 1, 1, 1, 2]))
    assert by_id["per_group"] == {0: 1.0, 1: pytest.approx(1 / 3), 2: 1.0} and by_id["worst_group"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        group_accuracy(logits, labels, groups[:-1])


def test_fit_scales_stay_in_the_unit_interval_and_switch_off_a_misleading_prototype():
    # class 0 = prototype 0 (the object) + prototype 1 (a spurious direction that also fires on class 1)
    prototypes = torch.tensor([[[1.0, 0, 0], [0, 0, 1.0]], [[0, 1.0, 0], [0, 0, 0.0]]])
    head = PrototypeHead(prototypes.sum(dim=1), torch.zeros(2), torch.tensor([0, 1]), prototypes)
    pooled = torch.tensor([[1.0, 0, 0], [1.0, 0, 1], [0, 1.0, 1.5], [0, 1.0, 0]])
    labels, groups = torch.tensor([0, 0, 1, 1]), ["0a", "0b", "1b", "1a"]
    assert group_accuracy(head(pooled)[0], labels, groups)["worst_group"] == 0.0
    scale = fit_scales(head, pooled, labels, groups, steps=200, lr=0.05)
    assert bool(((scale >= 0) & (scale <= 1)).all())
    assert scale[0, 1] < 0.1 and scale[0, 0] == 1  # the misleading prototype is switched off, the object kept
    assert group_accuracy(head.logits(pooled, head.contributions(pooled), scale), labels, groups)["worst_group"] == 1.0
    assert scales_changed(scale) == int((scale != 1).sum()) and scales_changed(torch.ones(2, 2)) == 0


def test_dfr_solver_reaches_scikit_learns_optimum():
    """DFR's L1 logistic regression (FISTA, no scikit-learn at run time) against scikit-learn's saga."""
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 12))
    y = (x @ (rng.normal(size=(3, 12)) * (rng.random((3, 12)) < 0.3)).T + rng.gumbel(size=(60, 3))).argmax(1)

    def objective(w, b, c):
        logits = torch.tensor(x) @ torch.as_tensor(w).double().T + torch.as_tensor(b).double()
        penalty = torch.as_tensor(w).abs().sum() / c
        return float(torch.nn.functional.cross_entropy(logits, torch.tensor(y), reduction="sum") + penalty)

    for c in (1.0, 0.1):
        w, b = l1_logistic_regression(torch.tensor(x), torch.tensor(y), 3, c)
        reference = linear_model.LogisticRegression(C=c, l1_ratio=1.0, solver="saga", max_iter=20000, tol=1e-8).fit(x, y)
        assert objective(w, b, c) <= objective(reference.coef_, reference.intercept_, c) + 1e-3
        assert (w == 0).any()  # the L1 penalty gives exact zeros


# -- what is reported ------------------------------------------------------------------------------------
def test_shortcut_json_has_the_schema(bench):
    out, results = bench
    on_disk = json.loads((out / "shortcut.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert {"seeds", "labels_per_group", "background_prototypes_found", "protocol", "methods"} <= set(on_disk)
    assert on_disk["seeds"] == 1 and on_disk["labels_per_group"] == TINY.labels_per_group
    assert 0 <= on_disk["background_prototypes_found"] <= 1 and "epochs" in on_disk["protocol"]
    assert list(on_disk["methods"]) == list(METHODS)
    for m in on_disk["methods"].values():
        assert {"mean_acc", "worst_group_acc", "numbers_changed", "per_seed"} <= set(m)
        assert 0 <= m["worst_group_acc"] <= m["mean_acc"] <= 1
        assert set(m["per_seed"]) == {"0"} and m["per_seed"]["0"]["mean_acc"] == m["mean_acc"]
    assert set(on_disk["bar"]) == set(PROTOTYPE_METHODS)
    for name in ("reference_scales_fit_on_test", "reference_object_cells"):
        assert 0 <= on_disk[name]["worst_group_acc"] <= on_disk[name]["mean_acc"] <= 1 and on_disk[name]["note"]
    low, high = on_disk["head_error_range"]
    assert 0 <= low <= high <= 1 and set(on_disk["per_seed"]["0"]["head_error"]) == set(class_names(3))
    table = (out / "shortcut.md").read_text()
    assert table.count("\n| ") == len(METHODS) + 1 and "worst-group" in table


def test_numbers_changed_counts(bench):
    _, results = bench
    methods, seed = results["methods"], results["per_seed"]["0"]
    assert methods["original"]["numbers_changed"] == 0
    assert methods["dfr"]["numbers_changed"] == 3 * FEATURE_DIM + 3  # the whole head: C x D + C
    for name in ("prototypes_by_mask", "prototypes_few_labels"):
        scales = torch.tensor(seed["scales"][name])
        assert scales.shape == (3, seed["k"])
        assert methods[name]["numbers_changed"] == int((scales != 1).sum()) <= scales.numel()
    n_test = 9 * TINY.test_per_group  # the oracle edits every wrong test prediction once
    assert methods["oracle"]["numbers_changed"] == round((1 - methods["original"]["mean_acc"]) * n_test)
    ratio = results["bar"]["prototypes_by_mask"]["numbers_ratio"]
    assert ratio == pytest.approx(methods["prototypes_by_mask"]["numbers_changed"] / (3 * FEATURE_DIM + 3))


def seed0_test_photos(bench):
    """What the edit-in-space checks recompute from: seed 0's results, the mask rule's scales (C, k), its saved run, the
    model, the test split's rows of groups.csv and their features on the grid (N, H, W, D)."""
    from protolib.data.features import extract_features

    out, results = bench
    seed, data = results["per_seed"]["0"], out / "data"
    run = load_run(out / "seed-0" / "run")
    backbone = load_backbone(run.manifest["backbone"])
    rows = [r for r in read_groups(data).values() if r["split"] == "test"]
    feats = extract_features(backbone, [data / r["file"] for r in rows], cache_dir=out / "seed-0" / "features").feats
    return seed, torch.tensor(seed["scales"]["prototypes_by_mask"]), run, backbone, rows, feats


def test_space_by_discovered_parts_pools_the_cells_the_mask_rules_parts_leave(bench):
    """The edit in space recomputed by hand from the saved run: the mask rule's background prototypes, their
    parts' presence on each test photo's grid, the mean of the other cells, the model's own head."""
    from protolib.benchmarks import shortcut_space as space
    from protolib.method.spatial import LEVEL

    out, results = bench
    seed, by_mask, run, backbone, rows, feats = seed0_test_photos(bench)
    left_out = torch.zeros(feats.shape[:3], dtype=torch.bool)
    for c, i in (by_mask == 0).nonzero().tolist():
        part = run.nmf_prototypes[c, i] / run.presence_scale[c, i]
        left_out |= torch.einsum("nhwd,d->nhw", feats.clamp_min(0), part) >= LEVEL
    keep = (~left_out).float().unsqueeze(-1)
    pooled = (feats * keep).sum(dim=(1, 2)) / keep.sum(dim=(1, 2)).clamp_min(1)
    pooled = torch.where(keep.sum(dim=(1, 2)) == 0, feats.mean(dim=(1, 2)), pooled)
    labels = [class_names(3).index(r["class"]) for r in rows]
    expected = group_accuracy(pooled @ backbone.head_weight.T + backbone.head_bias, labels, [r["group"] for r in rows])
    method = results["methods"][space.NAME]
    assert method["worst_group_acc"] == expected["worst_group"] and method["mean_acc"] == expected["mean"]
    assert method["numbers_changed"] == int((by_mask == 0).sum()) == len(seed["space"]["parts_left_out"])
    assert seed["space"]["cells_left_out"] == pytest.approx(float(left_out.float().mean()), abs=1e-6)
    summary = results[space.NAME]
    assert summary["worst_group_acc"] == method["worst_group_acc"] and "not a weight" in summary["changed"]
    assert summary["gain_recovered"] == results["bar"][space.NAME]["gain_recovered"]
    assert set(summary["other_levels_diagnostic"]) == {f"{lvl:g}" for lvl in space.DIAGNOSTIC_LEVELS}
    assert "Edit in space" in (out / "shortcut.md").read_text()


def test_keeping_where_the_object_parts_are_pools_the_cells_recomputed_by_hand(bench):
    """The edit in space the other way round (``keep_object_parts``): each test photo keeps only the 10 % of its
    cells where the parts the mask rule keeps are most present, recomputed from the saved run."""
    from protolib.benchmarks import shortcut_space as space
    from protolib.method.spatial import KEEP_SHARE

    out, results = bench
    seed, by_mask, run, backbone, rows, feats = seed0_test_photos(bench)
    score = torch.zeros(feats.shape[:3])
    for c, i in (by_mask != 0).nonzero().tolist():
        score += torch.einsum("nhwd,d->nhw", feats.clamp_min(0), run.nmf_prototypes[c, i] / run.presence_scale[c, i])
    n = max(1, round(KEEP_SHARE * score[0].numel()))
    pooled = []
    for f, s in zip(feats, score):
        order = s.flatten().argsort(descending=True)[:n]
        pooled.append(f.reshape(-1, f.shape[-1])[order].mean(dim=0))
    logits = torch.stack(pooled) @ backbone.head_weight.T + backbone.head_bias
    labels = [class_names(3).index(r["class"]) for r in rows]
    expected = group_accuracy(logits, labels, [r["group"] for r in rows])
    kept = seed["space"]["keep_object_parts"]
    assert kept["worst_group_acc"] == expected["worst_group"] and kept["mean_acc"] == expected["mean"]
    assert kept["parts_kept"] == int((by_mask != 0).sum())
    summary = results[space.NAME]["keep_object_parts"]
    assert summary["worst_group_acc"] == kept["worst_group_acc"] and "no weight changed" in summary["changed"]
    assert "the other way round" in (out / "shortcut.md").read_text()


def test_command_line(monkeypatch, tmp_path, capsys, bench):
    _, results = bench
    seen = {}

    def fake(out, cfg, seeds, log=None):
        seen.update(out=out, cfg=cfg, seeds=seeds)
        return results

    monkeypatch.setattr("protolib.benchmarks.shortcut.run_shortcut_benchmark", fake)
    assert cli.main(["shortcut-benchmark", "--out", str(tmp_path)]) == 0
    assert seen == {"out": str(tmp_path), "cfg": ShortcutConfig(), "seeds": 3}
    assert "worst-group" in capsys.readouterr().out
    assert cli.main(["shortcut-benchmark", "--out", str(tmp_path), "--seeds", "1"]) == 0 and seen["seeds"] == 1
    assert cli.main(["shortcut-benchmark", "--out", str(tmp_path), "--discovery", "evidence"]) == 0
    assert seen["cfg"] == ShortcutConfig(discovery="evidence") and "discovery 'evidence'" in seen["cfg"].protocol()
    with pytest.raises(SystemExit):
        cli.main(["shortcut-benchmark", "--out", str(tmp_path), "--seeds", "0"])


def test_object_cells_reference_pools_the_object_cells_only(bench, monkeypatch):
    """With every cell on the object the reference is the model's own logits; with masks it pools fewer cells."""
    out, _ = bench
    data, seed = out / "data", out / "seed-0"
    backbone = load_backbone(load_run(seed / "run").manifest["backbone"])
    test = grouped_features(backbone, data, "test", seed / "features")
    masked = object_cells_logits(backbone, data, "test", seed / "features")
    assert masked.shape == test.logits.shape and not torch.allclose(masked, test.logits, atol=1e-3)
    monkeypatch.setattr("protolib.benchmarks.shortcut_splits.read_object_mask", lambda root, file: np.ones((64, 64), bool))
    assert torch.allclose(object_cells_logits(backbone, data, "test", seed / "features"), test.logits, atol=1e-4)


def test_the_demo_is_built_once_published_and_opens_as_a_data_folder(tmp_path, monkeypatch):
    runs, demos = tmp_path / "runs", tmp_path / "demos"
    run_path, data = build_shortcut_demo(runs, cfg=TINY, demos=demos)
    assert run_path == runs / "shared" / DEMO_RUN and (data / "groups.csv").is_file()
    env = {"PROTOLIB_RUNS": str(runs), "PROTOLIB_DEMOS": str(demos), "PROTOLIB_CACHE": str(tmp_path / "cache")}
    assert check_data_folder(data, environ=env) == data.resolve()  # every session may open it
    run = load_run(run_path, load_backbone(load_run(run_path).manifest["backbone"]))  # reloads by its model's name
    assert run.manifest["split"] == "heldout" and run.k == TINY.k

    def no_training(*args, **kwargs):
        raise AssertionError("the demo was built again")

    monkeypatch.setattr("protolib.benchmarks.shortcut.train_parts_net", no_training)
    assert build_shortcut_demo(runs, cfg=TINY, demos=demos) == (run_path, data)
