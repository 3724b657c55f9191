"""The Streamlit app without a browser (streamlit.testing AppTest), and its Streamlit-free helpers.

A module fixture makes one small real run (EfficientNet-Lite0, 2 classes x 8 photos of the shared
sample, k = 3) in a temporary runs folder; features are cached in a temporary folder too.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from protolib import appstate
from protolib.data import BadImage

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
DATA = appstate.SAMPLE_DATA
CLASSES = ["n01440764", "n02102040"]  # tench, English springer
RUN_PAGES = ["pages/prototypes.py", "pages/explain.py", "pages/intervene.py", "pages/evaluate.py"]
PAGES = ["pages/decompose.py", *RUN_PAGES]

needs_data = pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"the sample photos are not at {DATA}")


def png(colour=(200, 30, 30), size=64) -> bytes:
    rng = np.random.default_rng(sum(colour))
    pixels = (rng.random((size, size, 3)) * 60 + np.array(colour) * 0.7).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """PROTOLIB_RUNS / PROTOLIB_CACHE in temporary folders, and one small saved run."""
    if not (DATA / "train").is_dir():
        pytest.skip(f"the sample photos are not at {DATA}")
    from protolib.backbones import load_backbone
    from protolib.pipeline import run_decomposition
    from protolib.runs import save_run

    runs, cache = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("PROTOLIB_RUNS", str(runs))
    patch.setenv("PROTOLIB_CACHE", str(cache))
    patch.delenv("PROTOLIB_DATA", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: threads only wait for each other on a busy machine
    backbone = load_backbone()
    run = run_decomposition(backbone, DATA, classes=CLASSES, images_per_class=8, k=3, cache_dir=cache)
    save_run(run, runs / "small")
    yield {"runs": runs, "cache": cache, "run": "small"}
    torch.set_num_threads(threads)
    patch.undo()


@pytest.fixture(autouse=True)
def navigation_mode(monkeypatch):
    """AppTest builds a fresh PagesManager for every run, and one that sees a ``pages/`` folder runs
    Streamlit's legacy folder mode (a page without app.py). A server leaves that mode for good at the
    first st.navigation call (pages/ui.entry covers a server's very first run); so does this."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.pages_manager import PagesManager

    class Navigation(PagesManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            PagesManager.uses_pages_directory = False

    monkeypatch.setattr(app_test, "PagesManager", Navigation)


def start(page: str | None = None, run: str | None = "small") -> AppTest:
    """The app after its first run, on ``page`` (the sidebar drawn by app.py included), with the
    fixture's run chosen (other tests save runs too, and a new session opens the newest)."""
    at = AppTest.from_file(APP, default_timeout=120)
    if run:
        at.session_state["run"] = run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page and page != "pages/decompose.py":
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def classes_widget(at: AppTest):
    return next(m for m in at.multiselect if m.key.startswith("w.dec_classes|"))


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label.startswith(label))


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


# -- every page --------------------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_a_run(env, page):
    at = start(page)
    assert at.title[0].value == Path(page).stem.capitalize()
    assert not at.error, texts(at, "error")
    assert at.session_state["run"] == env["run"]


@pytest.mark.parametrize("page", RUN_PAGES)
def test_no_run_yet_sends_the_user_to_decompose(env, page, tmp_path, monkeypatch):
    monkeypatch.setenv("PROTOLIB_RUNS", str(tmp_path / "empty"))
    at = start(page)
    assert "no decomposition yet" in texts(at, "info")
    assert not at.error


def test_sidebar_defaults(env):
    at = start()
    assert at.session_state["backbone"] == "efficientnet_lite0"
    assert at.session_state["data_dir"] == str(DATA)
    assert at.selectbox(key="w.run").value == "small"


# -- Decompose -----------------------------------------------------------------------------------
def test_decompose_runs_saves_and_selects_the_run(env):
    at = start("pages/decompose.py")
    assert set(classes_widget(at).options) >= {"tench · 100 images"}
    classes_widget(at).set_value(CLASSES).run()
    at.slider(key="w.dec_k").set_value(2).run()
    at.number_input(key="w.dec_per_class").set_value(4).run()
    assert at.text_input(key="w.dec_name").value == "efficientnet_lite0-2cls-k2-optimized"
    at.text_input(key="w.dec_name").set_value("my run").run()
    button(at, "Run decomposition").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at, "error")
    assert "my-run" in texts(at, "success")
    assert at.session_state["run"] == "my-run"
    assert (env["runs"] / "my-run" / "manifest.json").is_file()
    assert at.selectbox(key="w.run").value == "my-run"
    stages = at.session_state["last_decomposition"]["stages"]
    names = ["Backbone features", "NMF part discovery", "Scaling to the head", "Refinement"]
    assert [s["stage"] for s in stages] == names
    assert stages[0]["done"] == stages[0]["total"] == 8
    # an earlier run can be reloaded
    at.selectbox(key="w.dec_load").set_value("small").run()
    button(at, "Load run").click().run()
    assert at.session_state["run"] == "small"


def test_decompose_lists_data_problems_instead_of_failing(env, tmp_path):
    data = tmp_path / "data"
    good = data / "train" / CLASSES[0]
    good.mkdir(parents=True)
    for path in sorted((DATA / "train" / CLASSES[0]).iterdir())[:3]:
        shutil.copy(path, good / path.name)
    (good / "broken.jpg").write_bytes(b"not really a jpeg")
    (good / "notes.txt").write_text("a note")
    (data / "train" / "holiday_photos").mkdir()
    at = start("pages/decompose.py")
    at.sidebar.text_input(key="w.data_dir").set_value(str(data)).run()
    assert at.dataframe[0].value["file or folder"].str.endswith("holiday_photos").any()  # matches no class
    at.slider(key="w.dec_k").set_value(2).run()
    button(at, "Run decomposition").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "skipped" in texts(at, "warning")
    problems = at.session_state["last_decomposition"]["problems"]
    assert {Path(p).name for p, _ in problems} >= {"broken.jpg", "notes.txt", "holiday_photos"}


def test_decompose_explains_a_missing_folder(env):
    at = start("pages/decompose.py")
    at.sidebar.text_input(key="w.data_dir").set_value("/nowhere/at/all").run()
    assert not at.exception
    assert "does not exist" in texts(at, "error")
    assert button(at, "Run decomposition").disabled  # nothing to run


def test_decompose_reports_a_missing_model_and_impossible_settings(env):
    at = start("pages/decompose.py")
    classes_widget(at).set_value([CLASSES[0]]).run()
    at.number_input(key="w.dec_per_class").set_value(2).run()  # fewer photos than k = 3 prototypes
    button(at, "Run decomposition").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "at least 3" in texts(at, "error")
    if not (Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth").is_file():
        at.sidebar.selectbox(key="w.backbone").set_value("resnet18").run()
        assert not at.exception, [e.value for e in at.exception]
        assert "The backbone cannot be loaded" in texts(at, "error")


def test_decompose_from_uploaded_photos(env):
    at = start("pages/decompose.py")
    at.segmented_control(key="w.dec_source").set_value("Uploaded photos").run()
    assert "No photos uploaded yet" in texts(at, "info")
    at.selectbox(key="w.upload_label").set_value(1).run()  # goldfish
    files = [(f"fish{i}.png", png((200, 100 + 30 * i, 20)), "image/png") for i in range(3)]
    at.file_uploader[0].set_value([*files, ("readme.txt", b"hello", "text/plain")]).run()
    button(at, "Add these photos").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Added 3 photo(s) to “goldfish”" in texts(at, "success")
    assert "“readme.txt” is not an image" in texts(at, "error")
    assert classes_widget(at).value == ["1"]
    at.slider(key="w.dec_k").set_value(2).run()
    button(at, "Run decomposition").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["last_decomposition"]["classes"] == 1


# -- Prototypes ----------------------------------------------------------------------------------
def test_prototypes_cards_gallery_and_top_images(env):
    at = start("pages/prototypes.py")
    assert [m.label for m in at.metric] == ["alpha", "share of logit"] * 3
    assert "tench" in at.subheader[0].value
    images = at.get("image")
    assert len(images) >= 8 + 3 * 6  # the gallery (8 photos) and 6 top photos per prototype
    at.selectbox(key="w.proto_class").set_value(1).run()
    assert not at.exception
    assert "English springer" in at.subheader[0].value
    shares = [float(m.value.rstrip(" %")) for m in at.metric if m.label == "share of logit"]
    assert abs(sum(shares) - 100) <= 2


def test_prototypes_gallery_pages(env, monkeypatch):
    monkeypatch.setattr(appstate, "GALLERY_PAGE_SIZE", 3)
    at = start("pages/prototypes.py")
    pages = at.get("pagination")
    assert len(pages) == 1 and pages[0].num_pages == 3  # 8 photos, 3 per page
    assert "Images 1–3 of 8." in texts(at, "caption")
    pages[0].set_value(3).run()
    assert not at.exception
    assert "Images 7–8 of 8." in texts(at, "caption")


# -- Explain -------------------------------------------------------------------------------------
def test_explain_data_photo_and_uploads(env):
    at = start("pages/explain.py")
    assert not at.error
    assert at.get("plotly_chart")
    files = at.selectbox(key="w.img_file").options
    at.selectbox(key="w.img_file").set_value(files[3]).run()
    assert not at.exception
    at.selectbox(key="w.explain_class." + str(DATA / "val" / CLASSES[0] / files[3])).set_value(217).run()
    assert "English springer" in str(at.get("plotly_chart")[0].proto.spec)

    at.segmented_control(key="w.img_source").set_value("Upload").run()
    at.file_uploader[0].set_value(("notes.txt", b"just some text", "text/plain")).run()
    assert not at.exception
    assert "“notes.txt” is not an image that can be read" in texts(at, "error")
    at.file_uploader[0].set_value(("red.png", png(), "image/png")).run()
    assert not at.exception and not at.error
    assert at.get("plotly_chart")


# -- Intervene -----------------------------------------------------------------------------------
def test_intervene_live_val_oracle_and_save(env):
    at = start("pages/intervene.py")
    logit = at.metric[0]
    before = float(logit.value)
    assert logit.label == "Logit of “tench”"
    at.toggle[0].set_value(False).run()  # P1 of tench off
    assert not at.exception
    after = float(at.metric[0].value)
    assert after < before and at.metric[0].delta.startswith("-")
    at.slider(key=next(s.key for s in at.slider if s.key.endswith(".1.scale"))).set_value(0.5).run()
    assert float(at.metric[0].value) < after

    at.number_input(key="w.val_per_class").set_value(3).run()
    at.toggle(key="w.val_only_run").set_value(True).run()
    button(at, "Compute held-out features").click().run()
    assert not at.exception and not at.error, texts(at, "error")
    labels = [m.label for m in at.metric]
    assert {"Top-1 before", "Top-1 after", "Predictions changed"} <= set(labels)
    button(at, "Run the oracle").click().run()
    assert "Top-1 with the oracle" in [m.label for m in at.metric]
    at.toggle(key="w.val_among_run").set_value(True).run()  # a 2-way classifier: tench or springer
    assert not at.exception
    changed = next(m for m in at.metric if m.label == "Predictions changed")
    assert changed.value.endswith("/ 6")
    button(at, "Run the oracle").click().run()
    oracle = {m.label: m.value for m in at.metric}
    assert float(oracle["Top-1 with the oracle"].rstrip(" %")) >= float(oracle["Top-1 before"].rstrip(" %"))

    at.text_input(key=next(t.key for t in at.text_input if t.key.startswith("w.iv_name"))).set_value("edited").run()
    button(at, "Save as a new run").click().run()
    assert not at.exception
    assert "edited" in texts(at, "success")
    from protolib.runs import load_run

    edited = load_run(env["runs"] / "edited")
    assert edited.scale is not None and float(edited.scale[0, 0]) == 0 and float(edited.scale[0, 1]) == 0.5
    assert edited.manifest["intervention"] == "tench: P1 off, P2 ×0.5"
    button(at, "Open").click().run()
    assert at.session_state["run"] == "edited"


# -- Evaluate ------------------------------------------------------------------------------------
def test_evaluate_figures(env):
    at = start("pages/evaluate.py")
    assert not at.metric
    at.number_input(key="w.val_per_class").set_value(3).run()
    at.toggle(key="w.val_only_run").set_value(True).run()
    button(at, "Evaluate on the held-out split").click().run()
    assert not at.exception and not at.error, texts(at, "error")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Top-1, original model"] == metrics["Top-1, prototype network"]
    assert float(metrics["Max |logit difference|"]) <= 1e-3
    assert len(at.get("plotly_chart")) >= 2
    assert "Heatmap fidelity, optimized (this run)" in str(at.dataframe[0].value)


# -- sessions ------------------------------------------------------------------------------------
def test_two_sessions_do_not_share_choices(env):
    a, b = start("pages/decompose.py"), start("pages/decompose.py")
    classes_widget(a).set_value([CLASSES[1]]).run()
    a.slider(key="w.dec_k").set_value(5).run()
    b.run()
    assert classes_widget(b).value != [CLASSES[1]]
    assert b.slider(key="w.dec_k").value == 3


def test_choices_survive_page_switches(env):
    at = start("pages/decompose.py")
    classes_widget(at).set_value([CLASSES[0]]).run()
    at.switch_page("pages/explain.py").run()
    at.switch_page("pages/decompose.py").run()
    assert classes_widget(at).value == [CLASSES[0]]


# -- the Streamlit-free helpers (protolib.appstate) ----------------------------------------------
def test_default_data_folder_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert appstate.cli_data_arg(["--data", "x"]) == "x"
    assert appstate.cli_data_arg(["--other", "--data=y"]) == "y"
    assert appstate.cli_data_arg([]) is None
    assert appstate.default_data_dir(["--data", str(a)], {"PROTOLIB_DATA": str(b)}) == a
    assert appstate.default_data_dir(["--data", str(tmp_path / "no")], {"PROTOLIB_DATA": str(b)}) == b
    sample = appstate.default_data_dir([], {})
    assert sample == (appstate.SAMPLE_DATA if appstate.SAMPLE_DATA.is_dir() else None)
    assert appstate.SAMPLE_DATA == ROOT.parent / "shared" / "data" / "imagenette"


def test_runs_folder():
    assert appstate.runs_dir({"PROTOLIB_RUNS": "/x/runs"}) == Path("/x/runs")
    assert appstate.runs_dir({}) == ROOT / "runs"


def test_run_names(tmp_path):
    assert appstate.auto_run_name("efficientnet_lite0", 3, "optimized", 10) == "efficientnet_lite0-10cls-k3-optimized"
    assert appstate.clean_run_name("  my run/../x ") == "my-run-..-x"
    with pytest.raises(ValueError):
        appstate.clean_run_name("///")
    (tmp_path / "r").mkdir()
    (tmp_path / "r-2").mkdir()
    assert appstate.unique_run_path(tmp_path, "r") == tmp_path / "r-3"
    assert appstate.unique_run_path(tmp_path, "new") == tmp_path / "new"


def test_page_bounds():
    assert appstate.page_bounds(50, 1) == (0, 24, 3)
    assert appstate.page_bounds(50, 3) == (48, 50, 3)
    assert appstate.page_bounds(50, 9) == (48, 50, 3)  # clamped
    assert appstate.page_bounds(0, 1) == (0, 0, 1)


def test_scales_and_their_description():
    scale = appstate.scale_matrix(2, 3, {(0, 0): 0.0, (1, 2): 0.5})
    assert scale.tolist() == [[0, 1, 1], [1, 1, 0.5]]
    assert appstate.describe_scale(scale, ["tench", "dog"]) == "tench: P1 off; dog: P3 ×0.5"
    assert appstate.describe_scale(torch.ones(2, 3), ["a", "b"]) == "no change"


def test_top_logit_rows_and_gains():
    labels = ["a", "b", "c", "d"]
    original = torch.tensor([4.0, 3.0, 2.0, 1.0])
    edited = torch.tensor([1.0, 3.0, 2.0, 1.0])
    rows = appstate.top_logit_rows(labels, original, edited, n=2, decomposed=[0])
    assert [r["class"] for r in rows] == ["b", "c"]
    assert rows[0]["original rank"] == 2 and rows[0]["change"] == 0
    full = appstate.top_logit_rows(labels, original, edited, n=4, decomposed=[0])
    assert next(r for r in full if r["class"] == "a")["change"] == -3
    with_edited = appstate.top_logit_rows(labels, original, edited, n=2, include=[0])
    assert [(r["class"], r["rank"], r["original rank"]) for r in with_edited] == [("b", 1, 2), ("c", 2, 3), ("a", 3, 1)]
    gained, lost = appstate.gains_and_losses({1: 0.5, 0: -0.25, 2: 0.1}, labels)
    assert [r["class"] for r in gained] == ["b", "c"] and [r["class"] for r in lost] == ["a"]


def test_prototype_rows():
    weight = torch.eye(4)
    prototypes = torch.tensor([[2.0, 0, 0, 0], [0, 0, 3.0, 1.0]])
    contributions = torch.tensor([[3.0, -1.0], [1.0, -1.0]])
    rows = appstate.prototype_rows(torch.tensor([0.5, -0.2]), prototypes, weight, list("wxyz"), "w", contributions, 2)
    assert rows[0]["top classes"][0] == ("w", pytest.approx(1.0))
    assert rows[1]["top classes"][0][0] == "y"
    assert rows[0]["share"] == pytest.approx(2 / 3) and rows[1]["mean contribution"] == -1
    assert "less like this part" in rows[1]["meaning"] and "more like this part" in rows[0]["meaning"]
    assert appstate.rank_by_contribution(contributions, 0, 1) == [0]
    negative = torch.tensor([[-0.5], [-2.0], [0.1]])
    assert appstate.rank_by_contribution(negative, 0, 3) == [1, 0, 2]  # negative evidence: most negative first


def test_uploads(tmp_path):
    assert appstate.read_upload("a.png", png()).size == (64, 64)
    for name, data in [("notes.txt", b"hello"), ("cut.png", png()[:200]), ("empty.jpg", b"")]:
        with pytest.raises(BadImage, match=f"“{name}” is not an image that can be read"):
            appstate.read_upload(name, data)
    saved, problems = appstate.save_uploads(tmp_path, "train", "1", [("x.jpg", png()), ("x.jpg", png()), ("y", b"no")])
    assert [p.name for p in saved] == ["x.png", "x-2.png"]
    assert len(problems) == 1 and "“y”" in problems[0].reason
    assert all(Image.open(p).size == (64, 64) for p in saved)


def test_run_rows_survive_a_damaged_run(tmp_path, env):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    rows = appstate.run_rows([tmp_path / "broken", env["runs"] / "small"])
    assert rows[0]["backbone"] == "(damaged)"
    assert rows[1]["classes"] == 2 and rows[1]["images"] == 16 and "tench" in rows[1]["class names"]


def test_evaluation_tables():
    metrics = {
        "top1_original": 0.9, "top1_prototype": 0.9, "max_abs_logit_diff": 2e-6, "prototypes_only_top1": 0.5,
        "residual_only_top1": 0.1, "feature_reconstruction_error": 0.6, "head_reconstruction_error": 0.8,
        "heatmap_fidelity": {"optimized": 0.99, "uniform": 0.9}, "heatmap_fidelity_min": {"optimized": 0.97},
        "heatmap_fidelity_per_class": {"optimized": {"0": 0.99}, "uniform": {"0": 0.9}},
        "strategy": "optimized", "n_images": 20, "k": 3,
    }
    rows = {r["figure"]: r["value"] for r in appstate.evaluation_rows(metrics)}
    assert rows["Top-1, original model"] == "90.0 %" and rows["Max |logit difference|"] == "2e-06"
    assert rows["Heatmap fidelity, optimized (this run)"] == "0.990 (worst 0.970)"
    assert [r["top-1"] for r in appstate.table3_rows(metrics)] == [0.5, 0.1, 0.9]
    per_class = appstate.fidelity_per_class_rows(metrics, ["tench"])
    assert per_class == [{"class": "tench", "optimized": 0.99, "uniform": 0.9}]
    assert [r["this run"] for r in appstate.fidelity_rows(metrics)] == [True, False]


def test_no_per_user_state_in_module_globals():
    """Per-user choices live in st.session_state: the shared page module keeps no mutable state."""
    import pages.ui as ui

    mutable = {
        name for name, value in vars(ui).items()
        if not name.startswith("__") and isinstance(value, (dict, list, set)) and not name.isupper()
    }
    assert not mutable, mutable
