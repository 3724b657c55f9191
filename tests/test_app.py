"""The Streamlit app without a browser (streamlit.testing AppTest), and its Streamlit-free helpers.

The ``app_env`` fixture (conftest.py, once per module) makes one small real run (EfficientNet-Lite0, 2 classes
x 8 photos of the sample shipped in the package, k = 3) in a temporary runs folder; features are cached in a
temporary folder too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from pages.common import edit_views, evaluation_views, run_views, uploads, viewmodels
from protolib import config
from protolib.data import BadImage, class_folders, load_image
from protolib.data.folders import UNKNOWN_CLASS_FOLDER, NoMatchingClasses, image_files
from protolib.method import MAX_K
from protolib.runs.listing import saved_runs
from protolib.runs.names import auto_run_name, safe_name, unique_path
from tests.apptest import CLASSES, DATA, ROOT, button, classes_widget, png, start, texts

RUN_PAGES = ["pages/prototypes.py", "pages/explain.py", "pages/intervene.py", "pages/evaluate.py"]
PAGES = ["pages/decompose.py", *RUN_PAGES]

pytestmark = pytest.mark.usefixtures("navigation_mode")

needs_data = pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"the sample photos are not at {DATA}")


def private_runs(at: AppTest) -> Path:
    """The folder of the session's own runs."""
    return at.session_state["workspace"].private_runs


# -- every page ---------------------------------------------------------------------------------
RUN_NAMES = ["tench", "English springer"]


def shows_decompose(at: AppTest) -> None:
    runs = at.dataframe[-1].value  # the saved runs (a new session has made none itself)
    small = runs[runs["run"] == "small"].iloc[0]
    assert (small["classes"], small["k"], small["images"], small["class names"]) == (2, 3, 16, "tench, English springer")
    assert "k = 3 · optimized · 2 classes: tench, English springer" in texts(at.sidebar, "caption")
    assert at.slider(key="w.dec_k").max == MAX_K


def shows_prototypes(at: AppTest) -> None:
    assert at.selectbox(key="w.proto_class").options == RUN_NAMES
    assert [m.label for m in at.metric] == ["mean contribution"] * 3  # one card per prototype, k = 3
    assert at.subheader[0].value == "Part maps across the 8 training images of “tench” · NMF parts, before refinement"
    assert len(at.get("image")) == 8 + 3 * (6 + 6)  # gallery; per prototype 6 heatmaps and their 6 part maps
    assert [t.label for t in at.tabs] == ["Prototype 1", "Prototype 2", "Prototype 3"]


def shows_explain(at: AppTest) -> None:
    photos = [p.name for p in image_files(DATA / "val" / CLASSES[0])]
    assert at.selectbox(key="w.img_file").options == photos and at.selectbox(key="w.img_file").value == photos[0]
    assert at.selectbox(key="w.img_class").value == CLASSES[0]
    explained = next(s for s in at.selectbox if s.label == "Class to explain")
    assert [o.removesuffix("  (predicted)") for o in explained.options] == RUN_NAMES
    assert len(at.get("image")) == 1 + 1 + 3  # the photo, its part map, one heatmap per prototype
    assert "NMF parts, before refinement" in str(at.get("image")[1].proto)
    assert "tench" in str(at.get("plotly_chart")[0].proto.spec)


def shows_intervene(at: AppTest) -> None:
    assert at.metric[0].label == "Logit of “tench”"
    assert [t.label for t in at.toggle] == ["P1 on", "P2 on", "P3 on", "Only the run's classes"]
    assert len([s for s in at.slider if s.key.endswith(".scale")]) == 3
    assert at.multiselect[0].value == [0]  # tench, the prediction


def shows_evaluate(at: AppTest) -> None:
    assert not at.metric  # nothing is computed before the button
    assert button(at, "Evaluate on the held-out split")
    sweep = at.dataframe[0].value
    small = sweep[sweep["run"] == "small"].iloc[0]
    assert (small["k"], small["classes"]) == (3, 2)


SHOWS = {
    "pages/decompose.py": shows_decompose,
    "pages/prototypes.py": shows_prototypes,
    "pages/explain.py": shows_explain,
    "pages/intervene.py": shows_intervene,
    "pages/evaluate.py": shows_evaluate,
}


@pytest.mark.parametrize("page", PAGES)
def test_every_page_shows_the_run(app_env, page):
    at = start(page)
    assert at.title[0].value == Path(page).stem.capitalize()
    assert not at.error, texts(at, "error")
    assert at.session_state["run"] == app_env["run"]
    SHOWS[page](at)


@pytest.mark.parametrize("page", RUN_PAGES)
def test_no_run_yet_sends_the_user_to_decompose(app_env, page, tmp_path, monkeypatch):
    monkeypatch.setenv("PROTOLIB_RUNS", str(tmp_path / "empty"))
    at = start(page)
    assert "no decomposition yet" in texts(at, "info")
    assert button(at, "Build the demo")  # one click away from a gallery
    assert not at.error


def test_sidebar_defaults(app_env):
    at = start()
    assert at.session_state["backbone"] == "efficientnet_lite0"
    assert at.session_state["data_dir"] == str(DATA)
    assert at.selectbox(key="w.run").value == "small"


# -- Decompose -----------------------------------------------------------------------------------
def test_decompose_runs_saves_and_selects_the_run(app_env):
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
    assert (private_runs(at) / "my-run" / "manifest.json").is_file()  # the session's own, private run
    assert private_runs(at).parent == app_env["runs"] / "sessions"
    assert at.selectbox(key="w.run").value == "my-run"
    stages = at.session_state["last_decomposition"]["stages"]
    names = ["Backbone features", "NMF part discovery", "Scaling to the head", "Refinement"]
    assert [s["stage"] for s in stages] == names
    assert stages[0]["done"] == stages[0]["total"] == 8
    # an earlier run can be reloaded
    at.selectbox(key="w.dec_load").set_value("small").run()
    button(at, "Load run").click().run()
    assert at.session_state["run"] == "small"


def test_decompose_offers_the_papers_nmf_and_the_kept_discoveries(app_env):
    at = start("pages/decompose.py")
    discovery = at.selectbox(key="w.dec_discovery")
    assert discovery.value == "nmf" and discovery.options == [
        "the paper's NMF",
        "evidence-weighted NMF",
        "evidence-weighted NMF of unit-length cells",
    ]
    classes_widget(at).set_value(CLASSES).run()
    at.slider(key="w.dec_k").set_value(2).run()
    at.number_input(key="w.dec_per_class").set_value(4).run()
    at.selectbox(key="w.dec_discovery").set_value("unit-evidence").run()
    at.text_input(key="w.dec_name").set_value("unit run").run()
    button(at, "Run decomposition").click().run()
    assert not at.exception and not at.error, texts(at, "error")
    manifest = json.loads((private_runs(at) / "unit-run" / "manifest.json").read_text())
    assert manifest["params"]["discovery"] == "unit-evidence" and "discovery" not in manifest  # recorded once
    assert manifest["presence_damping"] == 0.5  # and how its part maps read a cell
    assert "k = 2 · optimized · evidence-weighted NMF of unit-length cells · 2 classes" in texts(at.sidebar, "caption")
    runs = at.dataframe[-1].value
    assert runs[runs["run"] == "small"].iloc[0]["discovery"] == "the paper's NMF"  # older runs: the paper's NMF
    at.switch_page("pages/prototypes.py").run()  # its part maps say how they read a cell
    assert not at.exception and "loudness damped: ‖f‖^0.5 · cos(f, part)" in texts(at, "subheader")


def test_decompose_lists_data_problems_instead_of_failing(app_env, tmp_path):
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
    assert "fit a linear probe on this folder" in texts(at, "info")  # a folder of unknown classes: the probe helps
    at.slider(key="w.dec_k").set_value(2).run()
    button(at, "Run decomposition").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "skipped" in texts(at, "warning")
    problems = at.session_state["last_decomposition"]["problems"]
    assert {Path(p).name for p, _ in problems} >= {"broken.jpg", "notes.txt", "holiday_photos"}


def test_decompose_explains_a_missing_folder(app_env, tmp_path):
    at = start("pages/decompose.py")
    at.sidebar.text_input(key="w.data_dir").set_value(str(tmp_path / "nowhere")).run()  # allowed, but not there
    assert not at.exception
    assert "does not exist" in texts(at, "error")
    assert button(at, "Run decomposition").disabled  # nothing to run
    at.sidebar.text_input(key="w.data_dir").set_value("/nowhere/at/all").run()  # outside the allowed folders
    assert not at.exception
    assert "cannot be opened here" in texts(at, "error") and "does not exist" not in texts(at, "error")
    assert button(at, "Run decomposition").disabled


def test_decompose_reports_a_missing_model_and_impossible_settings(app_env):
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


def test_decompose_from_uploaded_photos(app_env):
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
def test_prototype_cards_lead_with_the_contribution_on_the_class_photos(app_env):
    """Each card's contribution is the mean of the logit's own per-prototype terms on the class's
    photos, and the sentence follows its sign (whatever alpha's)."""
    from protolib.backbones import load_backbone
    from protolib.data.features import extract_features
    from protolib.runs import load_run

    at = start("pages/prototypes.py")
    run = load_run(app_env["runs"] / "shared" / "small")
    backbone = load_backbone()
    head = run.head(backbone)
    for position, name in enumerate(RUN_NAMES):
        if position:
            at.selectbox(key="w.proto_class").set_value(position).run()
            assert not at.exception
        assert name in at.subheader[0].value
        folder = run.manifest["classes"][position]["folder"]
        features = extract_features(backbone, run.manifest["images"][folder], cache_dir=app_env["cache"])
        expected = head.contributions(features.pooled)[:, position, :].mean(dim=0)
        shown = [float(m.value) for m in at.metric if m.label == "mean contribution"]
        assert shown == pytest.approx(expected.tolist(), abs=0.006)
        meanings = [c.value for c in at.caption if "the logit of" in c.value and "on its photos" in c.value]
        assert len(meanings) == 3
        for value, meaning in zip(shown, meanings):
            assert meaning.startswith("raises" if value > 0 else "lowers"), (value, meaning)
        table = next(d.value for d in at.dataframe if "mean contribution" in d.value.columns)
        assert table["share"].sum() == pytest.approx(1.0, abs=1e-6)
        assert table["mean contribution"].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
        # the headline: mean logit = bias + the prototypes' mean contributions
        label = int(run.classes[position])
        logit = float(head(features.pooled)[0][:, label].mean())
        assert f"averages **{logit:.2f}** = bias {float(head.bias[label]):+.2f}" in texts(at, "caption")
        assert logit == pytest.approx(float(expected.sum() + head.bias[label]), abs=1e-4)


def test_prototypes_gallery_pages(app_env, monkeypatch):
    monkeypatch.setattr(viewmodels, "GALLERY_PAGE_SIZE", 3)
    at = start("pages/prototypes.py")
    pages = at.get("pagination")
    assert len(pages) == 1 and pages[0].num_pages == 3  # 8 photos, 3 per page
    assert "Images 1–3 of 8." in texts(at, "caption")
    pages[0].set_value(3).run()
    assert not at.exception
    assert "Images 7–8 of 8." in texts(at, "caption")


# -- Explain -------------------------------------------------------------------------------------
def test_explain_data_photo_and_uploads(app_env):
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
def test_intervene_live_val_oracle_and_save(app_env):
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

    edited = load_run(private_runs(at) / "edited")
    assert edited.scale is not None and float(edited.scale[0, 0]) == 0 and float(edited.scale[0, 1]) == 0.5
    assert edited.manifest["intervention"] == "tench: P1 off, P2 ×0.5"
    button(at, "Open “edited”").click().run()
    assert at.session_state["run"] == "edited"


# -- Evaluate ------------------------------------------------------------------------------------
def test_evaluate_figures(app_env):
    at = start("pages/evaluate.py")
    assert not at.metric
    at.number_input(key="w.val_per_class").set_value(3).run()
    at.toggle(key="w.val_only_run").set_value(True).run()
    button(at, "Evaluate on the held-out split").click().run()
    assert not at.exception and not at.error, texts(at, "error")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Top-1, original model"] == metrics["Top-1, prototype network"]
    assert float(metrics["Max |logit difference|"]) <= 1e-4
    assert len(at.get("plotly_chart")) >= 2
    assert "Heatmap fidelity, optimized (this run)" in str(at.dataframe[0].value)


# -- sessions ------------------------------------------------------------------------------------
def test_two_sessions_do_not_share_choices(app_env):
    a, b = start("pages/decompose.py"), start("pages/decompose.py")
    classes_widget(a).set_value([CLASSES[1]]).run()
    a.slider(key="w.dec_k").set_value(5).run()
    b.run()
    assert classes_widget(b).value != [CLASSES[1]]
    assert b.slider(key="w.dec_k").value == 3


def test_choices_survive_page_switches(app_env):
    at = start("pages/decompose.py")
    classes_widget(at).set_value([CLASSES[0]]).run()
    at.switch_page("pages/explain.py").run()
    at.switch_page("pages/decompose.py").run()
    assert classes_widget(at).value == [CLASSES[0]]


# -- Streamlit-free helpers: pages/common/*_views.py, viewmodels.py, uploads.py, protolib -------------
def test_default_data_folder_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert viewmodels.cli_data_arg(["--data", "x"]) == "x"
    assert viewmodels.cli_data_arg(["--other", "--data=y"]) == "y"
    assert viewmodels.cli_data_arg([]) is None
    assert viewmodels.default_data_dir(["--data", str(a)], {"PROTOLIB_DATA": str(b)}) == a
    assert viewmodels.default_data_dir(["--data", str(tmp_path / "no")], {"PROTOLIB_DATA": str(b)}) == b
    assert viewmodels.default_data_dir([], {"PROTOLIB_DATA": str(tmp_path / "no")}) == config.SAMPLE_DATA
    assert viewmodels.default_data_dir([], {}) == config.SAMPLE_DATA


def test_the_sample_folder_holds_train_and_val_class_folders_of_images():
    """The default data folder ships with the package: the same class folders in train/ and val/,
    each with readable photos, all of them ImageNet classes (named in its classes.csv)."""
    assert config.SAMPLE_DATA.is_relative_to(Path(config.__file__).parent)
    labels = [f"class {i}" for i in range(1000)]
    found = {}
    for split in ("train", "val"):
        classes, problems = class_folders(config.SAMPLE_DATA, split, labels, None)
        assert not problems and len(classes) == 10
        found[split] = [c.folder for c in classes]
        for c in classes:
            photos = image_files(config.SAMPLE_DATA / split / c.folder)
            assert len(photos) >= 50, (split, c.folder)
            assert load_image(photos[0]).size[0] > 0
    assert found["train"] == found["val"]
    assert set(CLASSES) <= set(found["train"])


def test_runs_folder_is_per_user():
    assert config.runs_dir({"PROTOLIB_RUNS": "/x/runs"}) == Path("/x/runs")
    assert config.runs_dir({"XDG_DATA_HOME": "/data"}) == Path("/data/protoscope/runs")
    default = config.runs_dir({})
    assert default == Path.home() / ".local" / "share" / "protoscope" / "runs"
    assert not default.is_relative_to(ROOT)  # never inside the source tree


def test_run_names(tmp_path):
    assert auto_run_name("efficientnet_lite0", 3, "optimized", 10) == "efficientnet_lite0-10cls-k3-optimized"
    assert auto_run_name("probe:/x/pets", 2, "paper", 2) == "probe-pets-2cls-k2-paper"
    assert safe_name("  my run/../x ") == "my-run-..-x"
    with pytest.raises(ValueError):
        safe_name("///")
    (tmp_path / "r").mkdir()
    (tmp_path / "r-2").mkdir()
    assert unique_path(tmp_path, "r") == tmp_path / "r-3"
    assert unique_path(tmp_path, "new") == tmp_path / "new"


def test_no_matching_classes_has_a_name(tmp_path):
    """The Decompose page offers a probe on these conditions, never on an error message's text."""
    labels = [f"class {i}" for i in range(1000)]
    (tmp_path / "train" / "holiday").mkdir(parents=True)
    with pytest.raises(NoMatchingClasses):
        class_folders(tmp_path, "train", labels, None)
    (tmp_path / "train" / "7").mkdir()
    classes, problems = class_folders(tmp_path, "train", labels, None)
    assert [c.label for c in classes] == [7]
    assert [(Path(p.path).name, p.reason, p.unknown_class) for p in problems] == [("holiday", UNKNOWN_CLASS_FOLDER, True)]


def test_default_class():
    logits = torch.tensor([0.0, 5.0, 3.0, 4.0])
    assert viewmodels.default_class(logits, [3, 2]) == (1, 3)  # the prediction is not in the run
    assert viewmodels.default_class(logits, [2, 1]) == (1, 1)


def test_page_bounds():
    assert viewmodels.page_bounds(50, 1) == (0, 24, 3)
    assert viewmodels.page_bounds(50, 3) == (48, 50, 3)
    assert viewmodels.page_bounds(50, 9) == (48, 50, 3)  # clamped
    assert viewmodels.page_bounds(0, 1) == (0, 0, 1)


def test_scales_and_their_description():
    scale = edit_views.scale_matrix(2, 3, {(0, 0): 0.0, (1, 2): 0.5})
    assert scale.tolist() == [[0, 1, 1], [1, 1, 0.5]]
    assert edit_views.describe_scale(scale, ["tench", "dog"]) == "tench: P1 off; dog: P3 ×0.5"
    assert edit_views.describe_scale(torch.ones(2, 3), ["a", "b"]) == "no change"


def test_top_logit_rows_and_gains():
    labels = ["a", "b", "c", "d"]
    original = torch.tensor([4.0, 3.0, 2.0, 1.0])
    edited = torch.tensor([1.0, 3.0, 2.0, 1.0])
    rows = edit_views.top_logit_rows(labels, original, edited, n=2, decomposed=[0])
    assert [r["class"] for r in rows] == ["b", "c"]
    assert rows[0]["original rank"] == 2 and rows[0]["change"] == 0
    full = edit_views.top_logit_rows(labels, original, edited, n=4, decomposed=[0])
    assert next(r for r in full if r["class"] == "a")["change"] == -3
    with_edited = edit_views.top_logit_rows(labels, original, edited, n=2, include=[0])
    assert [(r["class"], r["rank"], r["original rank"]) for r in with_edited] == [("b", 1, 2), ("c", 2, 3), ("a", 3, 1)]


def test_prototype_cards_read_the_sign_of_the_contribution():
    weight = torch.eye(4)
    prototypes = torch.tensor([[2.0, 0, 0, 0], [0, 0, 3.0, 1.0], [0, 1.0, 0, 0]])
    contributions = torch.tensor([[3.0, -1.0, -2.0], [1.0, -1.0, -2.62]])
    alpha = torch.tensor([0.5, -0.2, 0.00003])  # P3: a positive alpha, yet it lowers the logit
    cards = viewmodels.prototype_cards(alpha, prototypes, weight, list("wxyz"), "w", contributions, 2)
    assert cards[0].top_classes[0] == ("w", pytest.approx(1.0)) and cards[1].top_classes[0][0] == "y"
    assert [c.contribution for c in cards] == pytest.approx([2.0, -1.0, -2.31])
    assert [c.share for c in cards] == pytest.approx([2 / 5.31, 1 / 5.31, 2.31 / 5.31])
    assert cards[0].meaning.startswith("raises the logit of “w”")
    assert cards[1].meaning.startswith("lowers") and cards[2].meaning.startswith("lowers")
    assert viewmodels.signed(cards[2].alpha, 3) == "+3e-05"  # never "+0.000" beside a contribution of -2.31
    assert viewmodels.signed(-2.31) == "-2.31" and viewmodels.signed(0.0) == "0"
    unknown = viewmodels.prototype_cards(alpha, prototypes, weight, list("wxyz"), "w", None)
    assert unknown[0].contribution is None and "unknown" in unknown[0].meaning
    assert viewmodels.rank_by_contribution(contributions, 0, 1) == [0]
    negative = torch.tensor([[-0.5], [-2.0], [0.1]])
    assert viewmodels.rank_by_contribution(negative, 0, 3) == [1, 0, 2]  # negative evidence: most negative first


def test_uploads(tmp_path):
    assert uploads.read_upload("a.png", png()).size == (64, 64)
    for name, data in [("notes.txt", b"hello"), ("cut.png", png()[:200]), ("empty.jpg", b"")]:
        with pytest.raises(BadImage, match=f"“{name}” is not an image that can be read"):
            uploads.read_upload(name, data)
    files = [("x.jpg", png()), ("x.jpg", png()), ("y", b"no"), ("%%%.png", png())]
    saved, problems = uploads.save_uploads(tmp_path, "train", "1", files)
    assert [p.name for p in saved] == ["x.png", "x-2.png", "image.png"]
    assert len(problems) == 1 and "“y”" in problems[0].reason
    assert all(Image.open(p).size == (64, 64) for p in saved)


def test_run_listing_survives_a_damaged_run(tmp_path, app_env):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    broken, small = saved_runs(tmp_path)[0], next(r for r in saved_runs(app_env["runs"] / "shared") if r.name == "small")
    assert broken.manifest is None and "not a usable run folder" in broken.problem
    rows = run_views.run_rows([broken, small])
    assert rows[0]["backbone"] == "(damaged)"
    assert rows[1]["classes"] == 2 and rows[1]["images"] == 16 and "tench" in rows[1]["class names"]
    fingerprint = small.manifest["fingerprint"]
    assert run_views.same_model_runs([broken, small], fingerprint) == [small]
    assert run_views.same_model_runs([small], "other weights") == []


def test_evaluation_tables():
    metrics = {
        "top1_original": 0.9,
        "top1_prototype": 0.9,
        "max_abs_logit_diff": 2e-6,
        "table3": {
            "every_class_decomposed": False,
            "among_run_classes": {"prototypes_only": 0.5, "residual_only": 0.1, "both": 0.9},
            "all_classes": {"prototypes_only": 0.4, "residual_only": 0.0, "both": 0.8},
        },
        "feature_reconstruction_error": 0.6,
        "head_reconstruction_error": 0.8,
        "signed_fidelity": {
            "optimized": {"mean": 0.99, "min": 0.97, "flips": 0, "per_class": {"0": 0.99}},
            "uniform": {"mean": 0.9, "min": -0.2, "flips": 1, "per_class": {"0": 0.9}},
        },
        "strategy": "optimized",
        "n_images": 20,
        "k": 3,
    }
    rows = {r["figure"]: r["value"] for r in evaluation_views.evaluation_rows(metrics)}
    assert rows["Top-1, original model"] == "90.0 %" and rows["Max |logit difference|"] == "2e-06"
    assert rows["Top-1, NMF prototypes only, among the run's classes"] == "50.0 %"
    assert rows["Top-1, residual only, among all the model's classes"] == "0.0 %"
    assert rows["Heatmap fidelity, optimized (this run)"] == "0.990 (worst +0.970, 0 flipped)"
    assert rows["Heatmap fidelity, uniform"] == "0.900 (worst -0.200, 1 flipped)"
    table3 = evaluation_views.table3_rows(metrics)
    assert [r["head rows"] for r in table3] == ["NMF prototypes only", "residual only", "both (prototype network)"]
    assert [r["among the run's classes"] for r in table3] == [0.5, 0.1, 0.9]
    assert [r["among all the model's classes"] for r in table3] == [0.4, 0.0, 0.8]
    per_class = evaluation_views.fidelity_per_class_rows(metrics, ["tench"])
    assert per_class == [{"class": "tench", "optimized": 0.99, "uniform": 0.9}]
    assert [(r["this run"], r["flips"]) for r in evaluation_views.fidelity_rows(metrics)] == [(True, 0), (False, 1)]
    problems = viewmodels.problem_rows(["/d/val/x/a.txt: not an image file; skipped", ["/d/b.jpg", "broken"]])
    assert problems == [
        {"file or folder": "/d/val/x/a.txt", "problem": "not an image file; skipped"},
        {"file or folder": "/d/b.jpg", "problem": "broken"},
    ]


def test_no_per_user_state_in_module_globals():
    """Per-user choices live in st.session_state: the shared page modules keep no mutable state."""
    import importlib
    import pkgutil

    import pages.common

    for info in pkgutil.iter_modules(pages.common.__path__):
        module = importlib.import_module(f"pages.common.{info.name}")
        mutable = {
            name
            for name, value in vars(module).items()
            if not name.startswith("__") and isinstance(value, (dict, list, set)) and not name.isupper()
        }
        assert not mutable, (info.name, mutable)


def test_the_app_never_reads_a_manifest_itself():
    """One reader per artifact (protolib.runs, protolib.backbones.probe_models); no path built from the
    source tree; no Streamlit in the view models."""
    sources = {p: p.read_text() for p in [ROOT / "app.py", *sorted((ROOT / "pages").rglob("*.py"))]}
    for path, text in sources.items():
        for banned in ("json.load", "manifest.json", "probe.json", "__file__", "../shared"):
            assert banned not in text, (path, banned)
    common = ROOT / "pages" / "common"
    for path in [common / "viewmodels.py", common / "uploads.py", *sorted(common.glob("*_views.py"))]:
        text = path.read_text()
        assert "import streamlit" not in text and "from streamlit" not in text, path.name


def test_page_functions_take_what_they_need_as_arguments():
    """A page is a script at its bottom; its functions never read the variables that script sets."""
    import ast

    for path in sorted((ROOT / "pages").glob("*.py")):
        tree = ast.parse(path.read_text())
        script = {
            n.id
            for node in tree.body
            if isinstance(node, (ast.Assign, ast.AnnAssign))
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            for n in ast.walk(target)
            if isinstance(n, ast.Name) and not n.id.isupper()
        }
        for function in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
            own = {a.arg for a in ast.walk(function.args) if isinstance(a, ast.arg)} | {
                n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
            }
            read = {n.id for n in ast.walk(function) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            assert not (read & script) - own, (path.name, function.name, (read & script) - own)
