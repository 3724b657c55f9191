"""The evaluation report: built from a real run on the sample photos through the command line, every section
present with numbers in the JSON, the axioms holding, Grad-CAM equal to CAM for a linear head, the HTML
rendering every figure in Chromium with no network, and ProtoEval computed where keypoints exist."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch

from protolib.backbones.parts_net import PartsNet, PartsNetBackbone
from protolib.cli import main
from protolib.data import DataError
from protolib.data.features import split_features
from protolib.data.synthetic import class_names, make_parts_dataset, write_image_folder
from protolib.evaluation.faithfulness import auc, check_axioms, deletion_insertion, grad_cam
from protolib.evaluation.keypoints import keypoint_layout
from protolib.method import DEFAULT_STRATEGY, STRATEGIES
from protolib.method.head import PrototypeHead
from protolib.pipeline import run_decomposition
from protolib.report import SECTIONS, ReportSettings, build_report, write_report
from protolib.report.build_faithfulness import SALIENCY_MAPS
from protolib.runs import save_run

CLASSES = ["n01440764", "n02102040", "n02979186"]  # tench, English springer, cassette player
CHROMIUM = "/usr/bin/chromium"


pytestmark = pytest.mark.usefixtures("one_thread")  # waiting threads made the report 3-50x slower here


@pytest.fixture(scope="module")
def small_run(one_thread, lite0, data_dir, feature_cache, tmp_path_factory):
    run = run_decomposition(lite0, data_dir, classes=CLASSES, images_per_class=10, k=3, cache_dir=feature_cache)
    return save_run(run, tmp_path_factory.mktemp("report") / "run"), run


@pytest.fixture(scope="module")
def cli_report(small_run, data_dir, feature_cache):
    """The report of a 3-class run as the command line writes it (small counts: CI time)."""
    path, _ = small_run
    out = path.parent / "report.html"
    argv = [
        "report",
        "--run",
        str(path),
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--images-per-class",
        "6",
        "--faithfulness-images",
        "3",
        "--steps",
        "4",
        "--seeds",
        "2",
        "--cache",
        str(feature_cache),
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    return out, json.loads(out.with_suffix(".json").read_text())


def numbers(value) -> list[float]:
    """Every number inside a JSON value."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return []


def test_every_section_has_numbers_and_the_method_holds(cli_report):
    _, figures = cli_report
    assert set(SECTIONS) <= set(figures)
    for key in SECTIONS:
        if key != "protoeval":
            assert figures[key]["available"] is True, (key, figures[key])
            assert numbers(figures[key]), key
    # no keypoints in the sample photos: the section is there and says why
    assert figures["protoeval"] == {"available": False, "reason": figures["protoeval"]["reason"]}
    assert "no keypoints" in figures["protoeval"]["reason"]

    exact = figures["exactness"]
    assert exact["max_abs_logit_diff"] <= 1e-4 and exact["top1_prototype"] == exact["top1_original"]
    assert exact["n_images"] == 18 and exact["n_classes_decomposed"] == 3

    axioms = figures["axioms"]
    assert axioms["completeness"]["max_error"] <= 1e-4
    assert all(axioms[name]["passed"] for name in ("completeness", "linearity", "sensitivity", "null_prototype", "symmetry"))

    t3 = figures["table3"]
    assert t3["k"] == [1, 3, 5, 10] and t3["skipped_k"] == []
    assert t3["every_class_decomposed"] is False and t3["n_classes"] == 3 and t3["n_model_classes"] == 1000
    for space in ("among_run_classes", "all_classes"):
        for key in ("prototypes_only", "residual_only", "both"):
            assert len(t3[space][key]) == 4 and all(0 <= v <= 1 for v in t3[space][key])
    assert all(v == exact["top1_original"] for v in t3["all_classes"]["both"])  # both parts = the original head
    # among its own 3 classes a photo can only be confused with 2 others: never less accurate than 1000-way
    assert all(a >= b for a, b in zip(t3["among_run_classes"]["both"], t3["all_classes"]["both"]))
    errors = t3["feature_reconstruction_error"]
    assert all(0 < e < 1 for e in errors) and errors[-1] < errors[0]  # Figure 5: more prototypes, less error
    assert all(b <= a + 1e-3 for a, b in pairwise(errors))

    refinement = figures["refinement"]
    assert set(refinement["mean"]) == set(STRATEGIES) == set(refinement["flips"])  # every strategy, signed
    for strategy in STRATEGIES:
        assert -1 <= refinement["min"][strategy] <= refinement["mean"][strategy] <= 1
        assert refinement["flips"][strategy] == 0 or refinement["min"][strategy] < 0
    assert refinement["flips"][DEFAULT_STRATEGY] == 0
    assert len(refinement["examples"]) == 3 and all(len(e["heatmap_correlation"]) == 3 for e in refinement["examples"])

    stability = figures["seed_stability"]
    assert stability["seeds"] == [0, 1] and set(stability["per_class"]) == set(figures["run"]["classes"])
    assert all(0 < v <= 1 + 1e-6 for v in stability["per_class"].values())

    faith = figures["deletion_insertion"]
    assert list(faith["methods"]) == list(SALIENCY_MAPS) and faith["n_images"] == 3
    for name, curves in faith["methods"].items():
        for kind in ("deletion_auc", "insertion_auc"):
            interval = curves[kind]
            assert 0 <= interval["mean"] <= 1 and interval["low"] <= interval["mean"] <= interval["high"]
        assert ("minus_gradcam" in curves) == (name != "Grad-CAM")
        assert len(curves["deletion_curve"]) == len(faith["fractions"]) == 5
        # both curves end on the unmodified image: deleting nothing = inserting everything
        assert curves["deletion_curve"][0] == pytest.approx(curves["insertion_curve"][-1], abs=1e-5)
        assert curves["deletion_curve"][-1] < curves["deletion_curve"][0]

    intervention = figures["intervention"]
    for scope in ("all_classes", "run_classes"):
        oracle = intervention[scope]["oracle"]
        assert 0 <= oracle["top1_before"] <= oracle["top1_after"] <= 1  # the oracle never hurts
        importance = intervention[scope]["importance"]
        assert set(importance) == set(figures["run"]["classes"]) and all(len(v) == 3 for v in importance.values())
    # restricted to the run's classes a right answer stays right, so accuracy can only rise
    assert intervention["run_classes"]["oracle"]["top1_before"] >= intervention["all_classes"]["oracle"]["top1_before"]
    assert figures["run"]["seconds"]["total"] > 0


def test_html_renders_every_figure_offline_in_chromium(cli_report):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    out, _ = cli_report
    source = out.read_text()
    expected = source.count('<div class="figure">')
    assert expected == 8  # Table 3 (2), refinement, stability, deletion, insertion, intervention (2)
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(out.as_uri())
        page.wait_for_function(
            f"[...document.querySelectorAll('div.figure .js-plotly-plot')].filter(d => d.querySelector('.main-svg')).length"
            f" >= {expected}",
            timeout=60_000,
        )
        headings = page.eval_on_selector_all("section h2", "els => els.map(e => e.textContent)")
        broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        images = page.evaluate("document.images.length")
        browser.close()
    assert headings == list(SECTIONS.values())
    assert images >= 3 * 7 and broken == 0  # heatmap examples are inline PNGs
    assert all(url.startswith(("file:", "data:")) for url in requests), requests  # self-contained: works offline


def test_report_has_the_mistakes_and_table4_both_ways(cli_report):
    out, figures = cli_report
    m, exact = figures["mistakes"], figures["exactness"]
    for space in (m, m["run_classes"]):
        kinds = ("fixed_by_one", "fixed_by_two", "not_decomposed", "not_fixed_by_two")
        assert space["mistakes"] == sum(space[kind] for kind in kinds)
        assert space["oracle_smallest"]["top1_after"] >= space["oracle_paper"]["top1_after"]
        assert set(space["harmful_edit"]) >= {"chosen_on", "scored_on", "top1_before", "top1_after"}
    assert m["oracle_paper"]["top1_before"] == pytest.approx(exact["top1_prototype"])
    assert m["mistakes"] == round((1 - exact["top1_prototype"]) * exact["n_images"])
    assert "smallest culprit (one or two)" in out.read_text()


def test_story_says_so_when_no_mistake_is_fixed_by_one_switch(small_run, lite0, data_dir, feature_cache):
    """The 3-class run at k = 3 has no held-out mistake that one switch fixes: its story has no mistake card
    and says so (it used to fail extracting the features of an empty list of photos)."""
    from protolib.report.story import render_story, story_figures

    _, run = small_run
    story = story_figures(run, lite0, data_dir, cache_dir=feature_cache)
    assert story.cards == [] and story.galleries  # the case this test is about, and the rest of the page is there
    assert "No mistake is fixed by one switch." in render_story(story)


def test_grad_cam_is_cam_for_a_linear_head(lite0, data_dir):
    """Grad-CAM through the model's own head equals ReLU(f . v_c) / hw for a linear head on pooled features."""
    from protolib.explain import model_input

    paths = sorted((data_dir / "val" / CLASSES[0]).iterdir())[:2]
    x = torch.cat([model_input(lite0, p)[0] for p in paths])
    feats, _ = lite0(x)
    spatial = feats.permute(0, 3, 1, 2)
    labels = torch.tensor([0, 217])
    cam = grad_cam(lite0, spatial, labels)
    h, w = spatial.shape[-2:]
    expected = torch.relu(torch.einsum("bdhw,bd->bhw", spatial, lite0.head_weight[labels])) / (h * w)
    torch.testing.assert_close(cam, expected, rtol=1e-4, atol=1e-6)
    curves = deletion_insertion(lite0, x[:1], 0, {"cam": cam[0]}, steps=2)["cam"]
    assert curves.fractions == [0.0, 0.5, 1.0] and 0 <= auc(curves.deletion) <= 1


def test_axioms_catch_a_head_that_does_not_sum_up(small_run, lite0, data_dir, feature_cache):
    _, run = small_run
    sf = split_features(lite0, data_dir, "val", 4, CLASSES, feature_cache)
    head = run.head(lite0)
    assert check_axioms(head, sf.pooled, sf.logits)["completeness"]["passed"]
    broken = PrototypeHead(head.weight, head.bias, head.classes, head.refined_prototypes * 1.01)
    result = check_axioms(broken, sf.pooled, sf.logits)
    assert not result["completeness"]["passed"] and result["completeness"]["max_error"] > 1e-3
    assert result["sensitivity"]["passed"] and result["symmetry"]["passed"]  # properties of any prototype head


def test_report_on_keypoint_data_computes_protoeval(tmp_path):
    """A folder with keypoints.csv (the parts benchmark's layout): ProtoEval consistency and stability are computed,
    k values above the images per class are skipped and said so, and every section reports progress."""
    data = tmp_path / "parts"
    write_image_folder(make_parts_dataset(4, seed=0, num_classes=2), data, "train")
    write_image_folder(make_parts_dataset(3, seed=1, num_classes=2), data, "val")
    assert keypoint_layout(data) == ("csv", data / "val" / "keypoints.csv")
    cub = tmp_path / "CUB_200_2011"  # a CUB root is recognised by its annotation files
    (cub / "parts").mkdir(parents=True)
    (cub / "images.txt").write_text("")
    (cub / "parts" / "part_locs.txt").write_text("")
    assert keypoint_layout(cub) == ("cub", cub) and keypoint_layout(tmp_path) is None
    torch.manual_seed(0)
    backbone = PartsNetBackbone(PartsNet(2).eval(), 112, class_names(2))
    run = run_decomposition(backbone, data, k=2, cache_dir=False)
    calls = []
    settings = ReportSettings(faithfulness_images=2, steps=2, examples=1, seeds=2)
    report = build_report(run, backbone, data, settings, cache_dir=False, progress=lambda *a: calls.append(a))
    figures = report.figures
    protoeval = figures["protoeval"]
    assert protoeval["available"] and protoeval["n_classes"] == 2 and protoeval["n_images"] == 6
    for method in ("nmf", "refined"):
        for scores in protoeval["scores"][method].values():
            assert 0 <= scores["consistency"] <= 100 and 0 <= scores["stability"] <= 100
    assert figures["table3"]["k"] == [1, 3] and figures["table3"]["skipped_k"] == [5, 10]
    assert "4 training images" in figures["table3"]["note"]
    assert figures["axioms"]["completeness"]["max_error"] <= 1e-4
    assert [c[1] for c in calls if c[0] == "report"] == list(range(len(SECTIONS) + 1))
    html, js = write_report(report, tmp_path / "out" / "report.html")
    assert "Consistency and stability" in html.read_text() and json.loads(js.read_text())["protoeval"]["available"]


def test_clear_errors_for_bad_input(small_run, lite0, data_dir, tmp_path, capsys):
    path, run = small_run
    assert main(["report", "--run", str(tmp_path / "absent"), "--data", str(data_dir)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    (tmp_path / "only-train" / "train").mkdir(parents=True)
    assert main(["report", "--run", str(path), "--data", str(tmp_path / "only-train"), "--device", "cpu"]) == 2
    assert "only-train/val does not exist" in capsys.readouterr().err
    assert main(["report", "--run", str(path), "--data", str(data_dir), "--out", str(tmp_path / "r.txt")]) == 2
    assert "must be an .html file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 2 NMF seeds"):
        ReportSettings(seeds=1)
    with pytest.raises(DataError, match="does not exist"):
        build_report(run, lite0, tmp_path / "only-train")


@pytest.fixture
def app_env(small_run, feature_cache, monkeypatch, navigation_mode):
    """The app with the fixture's run in its runs folder, in navigation mode (as tests/test_app.py sets it up)."""
    path, _ = small_run
    monkeypatch.setenv("PROTOLIB_RUNS", str(path.parent))
    monkeypatch.setenv("PROTOLIB_CACHE", str(feature_cache))
    monkeypatch.delenv("PROTOLIB_DATA", raising=False)
    return path.name


@pytest.mark.slow
def test_evaluate_page_builds_and_offers_the_report(app_env):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=300)
    at.session_state["run"] = app_env
    at.run()
    at.switch_page("pages/evaluate.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.number_input(key="w.val_per_class").set_value(3).run()
    at.number_input(key="report_faith_images").set_value(1).run()
    next(b for b in at.button if b.label == "Build the report").click().run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["Completeness, max error"]) <= 1e-4
    assert any("deletion / insertion AUC" in label for label in metrics)
    assert len(at.get("download_button")) == 2
