"""Runs compared side by side (the paper's Figure 3) and across k, on real photos and the real embedded model.

Small real runs (EfficientNet-Lite0, 2 classes x 6 photos of the sample shipped in the package, k = 1, 3, 5;
one run of 2 other classes; one EfficientNet-Lite1 run when that backbone is registered) are compared on
held-out photos: a run against itself matches its prototypes one to one with agreement 1, k = 3 against
k = 5 matches 3 of 5, runs with no class in common are refused with a message, the PNG and the report
section are written, the Compare and Evaluate pages draw them, and the rule that picks k holds.
"""

from __future__ import annotations

import io
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from PIL import Image

from pages.common import compare_views
from protolib.backbones import available_backbones, load_backbone
from protolib.cli import main
from protolib.data.features import extract_features, split_features
from protolib.evaluation.compare import CompareError, compare_runs, find_shared_class, shared_classes
from protolib.evaluation.compare_figure import comparison_png
from protolib.evaluation.k_choice import K_RULE, k_sweep_point, suggest_k
from protolib.evaluation.metrics import evaluate_run, training_matrices
from protolib.pipeline import run_decomposition
from protolib.report import ReportSettings, build_report, report_documents
from protolib.report.build_comparison import comparison_report
from protolib.report.build_method import seed_stability_section
from protolib.report.html import render_comparison
from protolib.runs import load_run, save_run
from protolib.runs.listing import SavedRun

CLASSES = ["n01440764", "n02102040"]  # tench, English springer
OTHER = ["n02979186", "n03000684"]  # cassette player, chain saw
LITE1 = "efficientnet_lite1"
PHOTOS = 4
pytestmark = pytest.mark.usefixtures("one_thread")


def has_lite1() -> bool:
    return LITE1 in {s.name for s in available_backbones()}


@pytest.fixture(scope="module")
def runs(lite0, data_dir, feature_cache, tmp_path_factory, one_thread) -> dict[str, Path]:
    """Saved runs: Lite0 k = 1, 3, 5 of tench and springer; Lite0 k = 3 of two other classes; Lite1 k = 3."""
    root = tmp_path_factory.mktemp("compare-runs")
    made = {}
    for name, classes, k in (
        ("lite0-k3", CLASSES, 3),
        ("lite0-k5", CLASSES, 5),
        ("lite0-k1", CLASSES, 1),
        ("lite0-other-k3", OTHER, 3),
    ):
        run = run_decomposition(lite0, data_dir, classes=classes, images_per_class=6, k=k, cache_dir=feature_cache)
        made[name] = save_run(run, root / name)
    if has_lite1():
        lite1 = load_backbone(LITE1)
        run = run_decomposition(lite1, data_dir, classes=CLASSES, images_per_class=6, k=3, cache_dir=feature_cache)
        made["lite1-k3"] = save_run(run, root / "lite1-k3")
    return made


def compare(paths: list[Path], lite0, data_dir, feature_cache, class_name="tench", **kwargs):
    loaded = [load_run(p) for p in paths]
    backbones = [lite0 if r.manifest["backbone"] == lite0.name else load_backbone(r.manifest["backbone"]) for r in loaded]
    return compare_runs(loaded, backbones, data_dir, class_name, photos=PHOTOS, cache_dir=feature_cache, **kwargs)


# -- matching ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("maps", ["heatmaps", "coefficients"])
def test_a_run_compared_with_itself_matches_each_prototype_to_itself(runs, lite0, data_dir, feature_cache, maps):
    c = compare([runs["lite0-k3"]] * 2, lite0, data_dir, feature_cache, maps=maps)
    (pair,) = c.pairs
    assert [(i, j) for i, j, _ in pair.pairs] == [(0, 0), (1, 1), (2, 2)]
    assert c.agreement == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(c.per_photo, torch.ones(PHOTOS), atol=1e-5)
    assert pair.unmatched_a == pair.unmatched_b == []
    assert [s.name for s in c.sides] == ["lite0-k3 (1)", "lite0-k3 (2)"]  # the same run twice, told apart
    assert c.columns(1) == [0, 1, 2]


def test_held_out_photos_and_contributions_add_up_to_the_models_logit(runs, lite0, data_dir, feature_cache):
    c = compare([runs["lite0-k3"], runs["lite0-k5"]], lite0, data_dir, feature_cache)
    trained = set(load_run(runs["lite0-k3"]).manifest["images"][CLASSES[0]])
    assert len(c.photos) == PHOTOS and not trained & set(c.photos)
    assert all(Path(p).parent == data_dir / "val" / CLASSES[0] for p in c.photos)
    model_logit = float(extract_features(lite0, c.photos, cache_dir=feature_cache).logits[:, 0].mean())  # tench = 0
    for side in c.sides:  # each run's prototypes + bias are the model's logit, exactly
        assert side.logit == pytest.approx(model_logit, abs=1e-3)
        assert float(side.shares.sum()) == pytest.approx(1.0)
        assert side.heatmaps.shape[:2] == (PHOTOS, side.k) and len(side.images) == PHOTOS


@pytest.mark.parametrize("maps", ["heatmaps", "coefficients"])
def test_k3_against_k5_is_a_partial_one_to_one_matching(runs, lite0, data_dir, feature_cache, maps):
    c = compare([runs["lite0-k3"], runs["lite0-k5"]], lite0, data_dir, feature_cache, maps=maps)
    (pair,) = c.pairs
    assert [i for i, _, _ in pair.pairs] == [0, 1, 2] and len({j for _, j, _ in pair.pairs}) == 3
    assert pair.unmatched_a == [] and len(pair.unmatched_b) == 2
    assert all(r > 0.5 for _, _, r in pair.pairs), pair.pairs  # the same features: each k = 3 part is found at k = 5
    assert 0.5 < c.agreement <= 1 + 1e-6
    assert max(r for _, _, r in pair.pairs) > 0.95  # at least one part is found again exactly
    # the Hungarian assignment maximises the summed correlation: no swap of two matches does better
    r = pair.correlation
    for a, (i, j, _) in enumerate(pair.pairs):
        for i2, j2, _ in pair.pairs[a + 1 :]:
            assert r[i, j] + r[i2, j2] >= r[i, j2] + r[i2, j] - 1e-6
    columns = c.columns(1)
    assert sorted(columns) == list(range(5)) and columns[:3] == [j for _, j, _ in pair.pairs]
    rows = c.match_rows()
    assert sum(row["r"] is None for row in rows) == 2
    assert rows[0]["match"].startswith(f"lite0-k3 P1 ↔ lite0-k5 P{pair.pairs[0][1] + 1}, r = ")
    worst = c.disagreeing(PHOTOS)
    assert sorted(worst) == list(range(PHOTOS)) and c.per_photo[worst[0]] == c.per_photo.min()


@pytest.mark.skipif(not has_lite1(), reason=f"{LITE1} is not registered")
def test_two_backbones_and_three_runs_side_by_side(runs, lite0, data_dir, feature_cache):
    c = compare([runs["lite0-k3"], runs["lite1-k3"], runs["lite0-k5"]], lite0, data_dir, feature_cache)
    assert [s.backbone for s in c.sides] == ["efficientnet_lite0", LITE1, "efficientnet_lite0"]
    assert c.sides[0].images[0].shape[:2] == (224, 224) and c.sides[1].images[0].shape[:2] == (240, 240)
    assert c.sides[0].heatmaps.shape[-1] == 7 and c.sides[1].heatmaps.shape[-1] == 8  # each backbone's own grid
    assert [(p.a, p.b) for p in c.pairs] == [(0, 1), (0, 2), (1, 2)]
    assert all(len(p.pairs) == 3 for p in c.pairs)
    assert c.agreement == pytest.approx(sum(p.agreement for p in c.pairs) / 3)
    assert 0 < c.pairs[0].agreement < 0.999  # two models: similar parts, never the same maps
    summary = c.summary()
    assert len(summary["matches"]) == len(c.match_rows()) and len(summary["per_photo"]) == PHOTOS


# -- which classes ----------------------------------------------------------------------------------------
def test_runs_with_no_class_in_common_are_refused_with_the_classes(runs, lite0, data_dir, feature_cache):
    with pytest.raises(CompareError, match="share no class") as info:
        compare([runs["lite0-k3"], runs["lite0-other-k3"]], lite0, data_dir, feature_cache)
    assert "lite0-k3 has tench, English springer" in str(info.value)
    assert "lite0-other-k3 has cassette player, chain saw" in str(info.value)
    with pytest.raises(CompareError, match="the runs share: tench, English springer") as info:
        compare([runs["lite0-k3"], runs["lite0-k5"]], lite0, data_dir, feature_cache, class_name="chain saw")
    assert "none of the runs (lite0-k3, lite0-k5) decomposed the class “chain saw”" in str(info.value)
    with pytest.raises(CompareError, match="2 or 3 runs"):
        compare([runs["lite0-k3"]], lite0, data_dir, feature_cache)


def test_classes_are_matched_by_folder_or_name_not_by_label():
    """A probe of one's own data numbers its classes from 0: "tench" is label 0 there and in ImageNet by chance,
    but "dog" (label 1 in the probe) is matched to ImageNet's "English springer" only by folder."""
    imagenet = {
        "classes": [
            {"label": 0, "name": "tench", "folder": "n01440764"},
            {"label": 217, "name": "English springer", "folder": "n02102040"},
        ]
    }
    probe = {
        "classes": [
            {"label": 0, "name": "Tench", "folder": "fish"},
            {"label": 1, "name": "dog", "folder": "n02102040"},
            {"label": 2, "name": "cat", "folder": "cat"},
        ]
    }
    shared = shared_classes([imagenet, probe])
    assert [(c.name, c.folders, c.positions) for c in shared] == [
        ("tench", ("n01440764", "fish"), (0, 0)),
        ("English springer", ("n02102040", "n02102040"), (1, 1)),
    ]
    assert find_shared_class([imagenet, probe], "dog", ["a", "b"]).name == "English springer"  # by the probe's folder
    with pytest.raises(CompareError, match="a did not decompose the class “cat”; the runs share: tench, English springer"):
        find_shared_class([imagenet, probe], "cat", ["a", "b"])


# -- exports -----------------------------------------------------------------------------------------------
def test_the_png_is_a_valid_image(runs, lite0, data_dir, feature_cache, tmp_path):
    c = compare([runs["lite0-k3"], runs["lite0-k5"]], lite0, data_dir, feature_cache)
    data = comparison_png(c, path=tmp_path / "out" / "cmp.png")
    assert (tmp_path / "out" / "cmp.png").read_bytes() == data
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 300


def test_the_command_line_writes_the_png_and_an_html_page(runs, data_dir, feature_cache, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    argv = [
        "compare",
        "--runs",
        str(runs["lite0-k3"]),
        str(runs["lite0-k5"]),
        "--class",
        "tench",
        "--data",
        str(data_dir),
        "--photos",
        "3",
        "--out",
        str(out),
        "--cache",
        str(feature_cache),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "lite0-k3 P1 ↔ lite0-k5 P" in printed and "agreement" in printed
    with Image.open(out) as image:
        image.verify()
    page = out.with_suffix(".html").read_text()
    assert "Runs side by side" in page
    assert page.count('<img alt="P') == 3 + 5 and "lite0-k3 ↔ lite0-k5" in page
    argv[argv.index("tench")] = "chain saw"
    assert main([*argv, "--overwrite"]) == 2  # (the PNG of the first call is only replaced with --overwrite)
    assert "the runs share: tench, English springer" in capsys.readouterr().err


@pytest.mark.slow
def test_the_report_gains_a_comparison_section(runs, lite0, data_dir, feature_cache):
    run = load_run(runs["lite0-k3"])
    settings = ReportSettings(
        images_per_class=2,
        ks=(1,),
        seeds=2,
        examples=1,
        faithfulness_images=1,
        steps=1,
        compare_with=[runs["lite0-k5"]],
        compare_photos=3,
    )
    assert settings.compare_with == (str(runs["lite0-k5"]),)
    report = build_report(run, lite0, data_dir, settings, cache_dir=feature_cache)
    section = report.figures["comparison"]
    assert section["available"] and [r["name"] for r in section["runs"]] == ["lite0-k3", "lite0-k5"]
    assert [c["class"] for c in section["classes"]] == ["tench", "English springer"]  # every shared class
    assert all(len(c["photos"]) == 3 and -1 <= c["agreement"] <= 1 for c in section["classes"])
    page, text = report_documents(report)
    assert '<section id="comparison">' in page and "Runs side by side on the same photos" in page
    assert '"comparison"' in text and report.images["compare0.run1.part"]
    # without compare_with the report is as before: no such section
    assert (
        "comparison"
        not in build_report(
            run,
            lite0,
            data_dir,
            ReportSettings(images_per_class=2, ks=(1,), seeds=2, examples=1, faithfulness_images=1, steps=1),
            cache_dir=feature_cache,
        ).figures
    )
    with pytest.raises(ValueError, match="at most 2 other runs"):
        ReportSettings(compare_with=["a", "b", "c"])


def test_a_report_comparison_the_runs_cannot_make_says_why(runs, lite0, data_dir, feature_cache):
    report, _ = comparison_report(
        [load_run(runs["lite0-k3"]), load_run(runs["lite0-k1"])],
        [lite0, lite0],
        data_dir,
        "English springer",
        photos=2,
        cache_dir=feature_cache,
    )
    assert report.figures["comparison"]["classes"][0]["class"] == "English springer"
    assert "English springer" in render_comparison(report)
    run = load_run(runs["lite0-k3"])
    settings = ReportSettings(
        images_per_class=2, ks=(1,), seeds=2, examples=1, faithfulness_images=1, steps=1, compare_with=[runs["lite0-other-k3"]]
    )
    section = build_report(run, lite0, data_dir, settings, cache_dir=feature_cache).figures["comparison"]
    assert section["available"] is False and "share no class" in section["reason"]


# -- the pages' view models ----------------------------------------------------------------------------------
def saved(name: str, fingerprint: str, folders: list[str], k: int = 3) -> SavedRun:
    return SavedRun(
        Path(name),
        {
            "fingerprint": fingerprint,
            "k": k,
            "classes": [{"folder": f, "name": f.upper(), "label": i} for i, f in enumerate(folders)],
        },
    )


def test_compare_defaults_and_same_class_runs():
    runs = {
        "a": saved("a", "x", ["f1", "f2"]),
        "b": saved("b", "x", ["f1"]),
        "c": saved("c", "y", ["f2", "f3"]),
        "d": saved("d", "x", ["f9"]),
        "broken": SavedRun(Path("broken"), None, "damaged"),
    }
    assert compare_views.comparable_runs(runs) == ["a", "b", "c", "d"]
    assert compare_views.compare_defaults(runs, "a") == ["a", "c"]  # another model first (Figure 3 compares backbones)
    assert compare_views.compare_defaults(runs, "b") == ["b", "a"]
    assert compare_views.compare_defaults(runs, "d") == ["d"]  # nothing shares a class with it
    assert compare_views.compare_defaults(runs, None) == ["a", "c"]
    same = compare_views.same_class_runs(list(runs.values()), runs["a"].manifest)
    assert [r.name for r in same] == ["a"]
    rows = compare_views.match_table(
        [
            {
                "match": "A P1 ↔ B P2, r = 0.95",
                "run": "A",
                "prototype": "P1",
                "matched run": "B",
                "matched prototype": "P2",
                "r": 0.95,
                "margin": 0.3,
            },
            {
                "match": "A P2 ↔ B P1, r = 0.90 (ambiguous)",
                "run": "A",
                "prototype": "P2",
                "matched run": "B",
                "matched prototype": "P1",
                "r": 0.9,
                "margin": 0.01,
            },
            {
                "match": "B P3: no counterpart in A",
                "run": "B",
                "prototype": "P3",
                "matched run": "A",
                "matched prototype": None,
                "r": None,
                "margin": None,
            },
        ],
        0.05,
    )
    readings = [r["reading"].split(":")[0] for r in rows]
    assert readings == ["the same part", "ambiguous", "no counterpart (the other run has fewer prototypes)"]


# -- which k the data supports ----------------------------------------------------------------------------------
def point(k, head, fidelity=0.99, flips=0, run=None):
    return {
        "run": run or f"k{k}",
        "k": k,
        "head error": head,
        "feature error": head / 2,
        "fidelity": fidelity,
        "flips": flips,
        "seed stability": 0.9,
    }


def test_the_k_rule():
    sweep = [point(1, 0.90), point(3, 0.60), point(5, 0.58), point(10, 0.57)]
    choice = suggest_k(sweep)
    assert choice.k == 3 and choice.rule == K_RULE.format(improvement=0.05, fidelity=0.95)
    assert "k = 3" in choice.sentence and "3.3 %" in choice.sentence  # (0.60 - 0.58) / 0.60
    assert suggest_k([point(1, 0.9), point(3, 0.6, flips=1), point(5, 0.58), point(10, 0.57)]).k == 5  # no flip
    assert suggest_k([point(1, 0.9), point(3, 0.6, fidelity=0.9), point(5, 0.58), point(10, 0.57)]).k == 5
    assert suggest_k(sweep, improvement=0.01).k is None  # every step still helps: the largest k never qualifies
    assert suggest_k([point(3, 0.6), point(5, 0.3), point(10, 0.1)]).k is None
    assert "try a larger k" in suggest_k([point(3, 0.6), point(5, 0.3)]).sentence
    assert suggest_k([point(3, 0.6)]).k is None  # one k says nothing
    assert "not measured" in suggest_k([point(1, 0.9), point(3, 0.6, fidelity=None), point(5, 0.59)]).sentence
    # two runs of one k (two strategies): the one with the better fidelity stands for it
    two = suggest_k([point(3, 0.6, fidelity=0.5, run="paper"), point(3, 0.6, fidelity=0.97, run="optimized"), point(5, 0.59)])
    assert two.k == 3 and [p["run"] for p in two.per_k] == ["optimized", "k5"]


@pytest.mark.slow
def test_k_sweep_on_real_runs(runs, lite0, data_dir, feature_cache):
    """k = 1, 3, 5 on the same photos: errors fall with k, fidelity on held-out photos and seed stability are
    measured per run, and the k chosen follows the rule."""
    sf = split_features(lite0, data_dir, "val", PHOTOS, CLASSES, feature_cache)
    points = []
    for name in ("lite0-k5", "lite0-k1", "lite0-k3"):
        run = load_run(runs[name], lite0)
        matrices = training_matrices(run, lite0, feature_cache)
        evaluation = evaluate_run(run, lite0, data_dir, features=sf, training=matrices)
        points.append(k_sweep_point(run, lite0.head_weight, evaluation, seed_stability_section(run, matrices, 2)))
    choice = suggest_k(points)
    per_k = choice.per_k
    assert [p["k"] for p in per_k] == [1, 3, 5] and [p["run"] for p in per_k] == ["lite0-k1", "lite0-k3", "lite0-k5"]
    assert per_k[0]["feature error"] > per_k[1]["feature error"] > per_k[2]["feature error"]
    assert per_k[0]["head error"] >= per_k[1]["head error"] >= per_k[2]["head error"] - 1e-6
    assert all(-1 <= p["fidelity"] <= 1 and 0 < p["seed stability"] <= 1 + 1e-6 for p in per_k)
    assert per_k[0]["seed stability"] == pytest.approx(1.0, abs=1e-3)  # one part: every seed finds it
    gains = [(a["head error"] - b["head error"]) / a["head error"] for a, b in pairwise(per_k)]
    passes = [g < 0.05 and p["fidelity"] >= 0.95 and p["flips"] == 0 for g, p in zip(gains, per_k)]
    expected = next((p["k"] for ok, p in zip(passes, per_k) if ok), None)
    assert choice.k == expected
    assert (f"k = {expected}" in choice.sentence) if expected else ("passes the rule" in choice.sentence)


# -- the pages -------------------------------------------------------------------------------------------------
@pytest.fixture
def app_env(runs, feature_cache, monkeypatch, navigation_mode):
    monkeypatch.setenv("PROTOLIB_RUNS", str(runs["lite0-k3"].parent))
    monkeypatch.setenv("PROTOLIB_CACHE", str(feature_cache))
    monkeypatch.delenv("PROTOLIB_DATA", raising=False)


def app_on(page: str, run: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=180)
    at.session_state["run"] = run
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_compare_page_shows_two_runs_side_by_side(app_env):
    at = app_on("pages/compare.py", "lite0-k3")
    assert at.title[0].value == "Compare" and not at.error
    chosen = at.multiselect(key="w.cmp_runs").value
    assert chosen[0] == "lite0-k3" and len(chosen) == 2  # the session's run and another sharing its classes
    assert at.selectbox(key="w.cmp_class").options == ["tench", "English springer"]
    at.multiselect(key="w.cmp_runs").set_value(["lite0-k3", "lite0-k5"]).run()
    at.number_input(key="w.cmp_photos").set_value(3).run()
    assert not at.exception and not at.error
    assert [m.label for m in at.metric] == ["Agreement", "lite0-k3 ↔ lite0-k5"]
    matches = at.dataframe[0].value
    assert len(matches) == 5 and matches["match"].iloc[0].startswith("lite0-k3 P1 ↔ lite0-k5 P")
    assert len(at.get("image")) == (1 + 3) + (1 + 5) + 3  # part map + heatmaps per run, the 3 least agreeing photos
    assert [b.label for b in at.get("download_button")] == ["Download as PNG"]
    at.multiselect(key="w.cmp_runs").set_value(["lite0-k3", "lite0-other-k3"]).run()
    assert "share no class" in at.error[0].value


@pytest.mark.slow
def test_evaluate_page_says_which_k_the_data_supports(app_env):
    at = app_on("pages/evaluate.py", "lite0-k3")
    at.number_input(key="w.val_per_class").set_value(PHOTOS).run()
    at.toggle(key="w.val_only_run").set_value(True).run()
    next(b for b in at.button if b.label == "Evaluate on the held-out split").click().run()
    next(b for b in at.button if b.label == "Measure fidelity and stability for each k").click().run()
    assert not at.exception, [e.value for e in at.exception]
    said = [s.value for s in at.success] + [i.value for i in at.info]
    assert any("The data supports k =" in s or "passes the rule" in s for s in said), said
    assert any("Rule: the smallest k after which" in c.value for c in at.caption)
    table = next(d.value for d in at.dataframe if "seed stability" in d.value.columns)
    assert sorted(table["k"]) == [1, 3, 5] and table["fidelity"].notna().all()
    assert (table["dead"] >= 0).all() and (table["duplicates"] >= 0).all()  # dead and duplicate prototypes counted
