"""Editing across classes on Intervene, naming prototypes, and the labels a run carries.

The Streamlit-free parts (``pages.common.edit_views``: the prototype table, its edits, accuracy per class and
per group; ``protolib.runs``: labels saved, validated and carried) are tested directly. The page runs in
streamlit.testing's AppTest on one small real run (EfficientNet-Lite0, 2 classes x 6 photos, k = 3) with a
tiny data folder of sample photos and a groups.csv (the shortcut benchmark's layout) as held-out split.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from pages.common.edit_views import (
    class_accuracy_rows,
    group_rows,
    groups_of,
    merge_table_edits,
    prototype_caption,
    prototype_name_changes,
    prototype_names_after,
    prototype_table,
    scale_text,
    scaled_settings,
    settings_of,
    swatch,
)
from protolib.config import SAMPLE_DATA
from protolib.data.folders import image_files
from protolib.runs import RunError, load_run, save_run
from protolib.runs.checks import manifest_problem
from protolib.runs.schema import MANIFEST

pytestmark = pytest.mark.usefixtures("navigation_mode")  # the app as AppTest runs it, in navigation mode

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["n01440764", "n02102040"]  # tench, English springer


# -- the table, its edits and the figures (no Streamlit) -------------------------------------------------
def test_prototype_table_rows_and_edits():
    scale = torch.ones(2, 3)
    scale[0, 1], scale[1, 2] = 0, 0.5
    labels = [["", "fins", ""], ["", "", ""]]
    rows = prototype_table(
        ["tench", "springer"],
        3,
        labels,
        scale,
        {(1, 0)},
        {(1, 1): "ears"},
        shares=torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]),
        colours=["#111111", "#222222"],
    )
    assert len(rows) == 6 and [r["prototype"] for r in rows[:3]] == ["P1", "P2", "P3"]
    assert [r["select"] for r in rows] == [False, False, False, True, False, False]
    assert [r["name"] for r in rows] == ["", "fins", "", "", "ears", ""]  # an unsaved edit is shown
    assert [r["scale"] for r in rows] == ["on", "off", "on", "on", "on", "×0.5"]
    assert rows[4]["share of the logit"] == pytest.approx(0.6) and "on the background" not in rows[0]
    assert rows[2]["colour"] == swatch("#111111") and rows[2]["colour"].startswith("data:image/svg+xml")
    with_background = prototype_table(["a"], 2, [["", ""]], torch.ones(1, 2), background=torch.tensor([[0.9, 0.1]]))
    assert [r["on the background"] for r in with_background] == pytest.approx([0.9, 0.1])
    assert with_background[0]["share of the logit"] is None

    # st.data_editor's edited_rows: ticks and labels, other columns and stray rows ignored
    chosen, pending = merge_table_edits(
        {0: {"select": True}, "4": {"select": True, "name": " ears "}, 9: {"select": True}, 2: {"class": "x"}}, 3, 6, {(1, 0)}, {}
    )
    assert chosen == {(0, 0), (1, 0), (1, 1)} and pending == {(1, 1): " ears "}
    chosen, pending = merge_table_edits({3: {"select": False}, 1: {"name": None}}, 3, 6, chosen, pending)
    assert chosen == {(0, 0), (1, 1)} and pending == {(1, 1): " ears ", (0, 1): ""}
    assert prototype_name_changes(labels, pending) == {(1, 1): "ears", (0, 1): ""}
    assert prototype_names_after(labels, [0, 217], pending) == {217: {1: "ears"}}  # "fins" emptied: dropped
    assert prototype_names_after(labels, [0, 217], {}) == {0: {1: "fins"}}
    assert prototype_name_changes(labels, {(0, 1): "fins "}) == {}


def test_scales_settings_and_names():
    settings = scaled_settings({}, [(0, 1), (1, 2)], 0.0)
    assert settings == {(0, 1): 0.0, (1, 2): 0.0}
    assert scaled_settings(settings, [(0, 1)], 1.0) == {(1, 2): 0.0}
    scale = torch.ones(2, 3)
    scale[1, 2] = 0.25
    assert settings_of(scale) == {(1, 2): 0.25}
    assert [scale_text(v) for v in (1.0, 0.0, 0.25)] == ["on", "off", "×0.25"]
    assert prototype_caption("tench", 1, "fins") == "tench · P2 “fins”" and prototype_caption("tench", 0) == "tench · P1"


def test_accuracy_per_class_and_per_group():
    truth = torch.tensor([0, 0, 1, 1, 1])
    before = torch.tensor([0, 1, 1, 1, 0])
    after = torch.tensor([0, 0, 1, 0, 0])
    rows = class_accuracy_rows(truth, before, after, ["tench", "springer"])
    assert rows[0] == {"class": "tench", "photos": 2, "before": 0.5, "after": 1.0, "change": 0.5}
    assert rows[1]["class"] == "springer" and rows[1]["change"] == pytest.approx(1 / 3 - 2 / 3)
    before_groups = {"mean": 0.6, "worst_group": 0.0, "per_group": {"water": 0.0, "land": 1.0}}
    after_groups = {"mean": 0.8, "worst_group": 0.5, "per_group": {"water": 0.5, "land": 0.9}}
    table = group_rows(before_groups, after_groups)
    assert [r["group"] for r in table] == ["water", "land"]  # the worst group after first
    assert table[0]["change"] == pytest.approx(0.5) and table[1]["change"] == pytest.approx(-0.1)


def test_groups_of_photos(tmp_path):
    rows = {"val/a/1.png": {"group": "a on water"}, "val/b/2.png": {"group": "b on land"}}
    paths = [str(tmp_path / "val/a/1.png"), str(tmp_path / "val/b/2.png"), str(tmp_path / "val/b/3.png"), "/elsewhere/x.png"]
    assert groups_of(paths, tmp_path, rows) == ["a on water", "b on land", None, None]


# -- labels in runs --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_run(lite0, tmp_path_factory):
    from protolib import run_decomposition

    cache = tmp_path_factory.mktemp("edits-cache")
    return run_decomposition(lite0, SAMPLE_DATA, classes=CLASSES, images_per_class=6, k=3, cache_dir=cache), cache


def test_labels_are_saved_validated_and_carried(small_run, tmp_path, lite0):
    run, _ = small_run
    tench, springer = (int(c) for c in run.classes)
    labelled = run.with_prototype_names({tench: {1: " fins ", 2: ""}, springer: {"0": "ears"}})
    assert labelled.prototype_names == {str(tench): {"1": "fins"}, str(springer): {"0": "ears"}}
    assert labelled.prototype_name_grid() == [["", "fins", ""], ["ears", "", ""]]
    assert run.prototype_names == {}  # a copy: the run itself is unchanged
    path = save_run(labelled, tmp_path / "labelled")
    again = load_run(path, lite0)
    assert again.prototype_name_grid() == [["", "fins", ""], ["ears", "", ""]]
    # a new version over the same folder (atomic), then the labels of an edited head
    save_run(again.with_prototype_names({tench: {0: "body"}}), path, overwrite=True)
    assert load_run(path).prototype_name_grid() == [["body", "", ""], ["", "", ""]]
    scale = torch.ones(2, 3)
    scale[0, 0] = 0
    edited = load_run(path).with_scale(scale, "tench: P1 off")
    assert edited.prototype_name_grid()[0][0] == "body"
    assert load_run(save_run(edited, tmp_path / "edited")).prototype_names == {str(tench): {"0": "body"}}

    for bad, why in (
        ({999: {0: "x"}}, "did not decompose"),
        ({tench: {3: "x"}}, "prototypes 0..2"),
        ({tench: {0: "two\nlines"}}, "line break"),
        ({tench: {0: "x" * 81}}, "longer than 80"),
    ):
        with pytest.raises(ValueError, match=why):
            run.with_prototype_names(bad)
    # a manifest whose labels were damaged by hand: listed as damaged, refused on load
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["prototype_names"] = {str(tench): {"7": "tail"}}
    (path / MANIFEST).write_text(json.dumps(manifest))
    assert "prototypes 0..2" in manifest_problem(manifest)
    with pytest.raises(RunError, match="damaged run"):
        load_run(path)


# -- the page (AppTest) ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(small_run, tmp_path_factory):
    """Temporary runs / uploads folders, the small run published as "small", and a data folder of sample
    photos (val: 3 per class) with a groups.csv: each class's photos in two groups."""
    run, cache = small_run
    runs, base = tmp_path_factory.mktemp("edits-runs"), tmp_path_factory.getbasetemp()
    save_run(run, runs / "shared" / "small")
    data = tmp_path_factory.mktemp("grouped")
    rows = []
    for folder in CLASSES:
        for n, photo in enumerate(image_files(SAMPLE_DATA / "val" / folder)[:3]):
            target = data / "val" / folder / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, target)
            background = "water" if n % 2 == 0 else "land"
            rows.append(
                {
                    "file": f"val/{folder}/{photo.name}",
                    "split": "val",
                    "class": folder,
                    "background": background,
                    "group": f"{folder} on {background}",
                }
            )
    with open(data / "groups.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    patch = pytest.MonkeyPatch()
    patch.setenv("PROTOLIB_RUNS", str(runs))
    patch.setenv("PROTOLIB_CACHE", str(cache))
    patch.setenv("PROTOLIB_UPLOADS", str(tmp_path_factory.mktemp("edits-uploads")))
    patch.setenv("PROTOLIB_DATA_ROOTS", str(base))
    patch.delenv("PROTOLIB_DATA", raising=False)
    yield {"runs": runs, "data": data, "run": run}
    patch.undo()


def start(page: str, data: Path | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["run"] = "small"
    if data is not None:
        at.session_state["data_dir"] = str(data)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label.startswith(label))


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def edit_of(at: AppTest) -> str:
    """The digest that names the current run's edits in the session's keys (``iv.<edit>.<class>.<i>.on``)."""
    return next(k for k in at.session_state if k.startswith("iv.")).split(".")[1]


def test_intervene_edits_across_classes_and_per_group(env):
    at = start("pages/intervene.py", env["data"])
    table = next(d.value for d in at.dataframe if "select" in d.value.columns)
    assert table["class"].tolist() == ["tench"] * 3 + ["English springer"] * 3
    assert table["scale"].tolist() == ["on"] * 6
    assert table.groupby("class")["share of the logit"].sum().tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    dead = table["share of the logit"] < 0.02  # the table says which prototypes carry (almost) nothing
    assert table["dead or duplicate"].str.startswith("dead").eq(dead).all()
    button(at, "Compute held-out features").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.toggle(key="w.val_among_run").set_value(True).run()  # a 2-way classifier: every photo is in a group
    assert metric(at, "Groups") == "4 · 6 photos"
    top1, worst = metric(at, "Top-1 after"), metric(at, "Worst group after")
    assert metric(at, "Top-1 before") == top1 and metric(at, "Worst group before") == worst

    # select every prototype of tench (rows 0-2) and one of springer, in one go, and switch them off
    selection = f"iv_sel.{edit_of(at)}"
    at.session_state[selection] = {(0, 0), (0, 1), (0, 2), (1, 0)}
    at.run()
    assert "**4 selected:** tench · P1, tench · P2, tench · P3, English springer · P1" in [c.value for c in at.caption]
    button(at, "Switch selected off").click().run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "select" in d.value.columns)
    assert table["scale"].tolist() == ["off", "off", "off", "off", "on", "on"]
    assert "Intervention: tench: P1 off, P2 off, P3 off; English springer: P1 off" in [c.value for c in at.caption]
    # tench without any prototype: its logit is its bias alone, and its photos are lost to springer
    per_class = next(d.value for d in at.dataframe if "photos" in d.value.columns)
    tench = per_class[per_class["class"] == "tench"].iloc[0]
    assert tench["after"] < tench["before"] or tench["before"] == 0
    assert metric(at, "Top-1 after") != top1 or metric(at, "Worst group after") != worst
    assert float(metric(at, "Worst group after").rstrip(" %")) == 0.0  # the tench groups are all wrong now
    summary = next(m.value for m in at.markdown if m.value.startswith("**Held-out top-1**"))
    assert "→" in summary and "**worst group**" in summary

    # the slider scales the selection together; Reset selected brings them back
    at.slider(key=f"w.iv_to.{selection.split('.')[1]}").set_value(0.5).run()
    button(at, "Apply to selected").click().run()
    table = next(d.value for d in at.dataframe if "select" in d.value.columns)
    assert table["scale"].tolist() == ["×0.5"] * 4 + ["on", "on"]
    button(at, "Reset selected").click().run()
    assert metric(at, "Top-1 after") == top1


def test_labels_are_saved_from_the_table_and_shown_on_every_page(env):
    at = start("pages/intervene.py")
    at.session_state[f"iv_pending.{edit_of(at)}"] = {(0, 1): "fins", (1, 0): "ears"}
    at.run()
    table = next(d.value for d in at.dataframe if "select" in d.value.columns)
    assert table["name"].tolist() == ["", "fins", "", "ears", "", ""]
    button(at, "Save 2 names in your own copy of this published run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["run"] == "small-labelled"  # the published run is read-only: a private copy
    assert "Names saved with run “small-labelled”." in [s.value for s in at.success]
    copy = load_run(at.session_state["workspace"].private_runs / "small-labelled")
    assert copy.prototype_name_grid() == [["", "fins", ""], ["ears", "", ""]] and copy.manifest["parent"] == "small"
    assert load_run(env["runs"] / "shared" / "small").prototype_names == {}

    # a label on the copy (the session's own run) is saved over it, as a new version
    copy_path = at.session_state["workspace"].private_runs / "small-labelled"
    at.session_state[f"iv_pending.{hashlib.sha256(f'edit|{copy_path}'.encode()).hexdigest()[:16]}"] = {(0, 2): "water"}
    at.run()
    button(at, "Save 1 name with this run").click().run()
    assert at.session_state["run"] == "small-labelled"
    assert load_run(at.session_state["workspace"].private_runs / "small-labelled").prototype_name_grid()[0] == ["", "fins", "water"]
    assert "P2 “fins”" in str([m.value for m in at.markdown])  # the per-class switches name it too

    at.switch_page("pages/prototypes.py").run()
    assert not at.exception
    assert [t.label for t in at.tabs] == ["Prototype 1", "Prototype 2 · fins", "Prototype 3 · water"]
    assert any("Prototype 2 · fins" in m.value for m in at.markdown)
    at.switch_page("pages/explain.py").run()
    assert not at.exception
    assert any("P2 “fins”" in m.value for m in at.markdown)
    bars = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]["x"]
    assert any("P2 “fins”" in name for name in bars) and any("P3 “water”" in name for name in bars)


def test_saved_edit_offers_the_model_download(env):
    at = start("pages/intervene.py")
    at.toggle[0].set_value(False).run()
    at.text_input(key=next(t.key for t in at.text_input if t.key.startswith("w.iv_name"))).set_value("fixed").run()
    button(at, "Save as a new run").click().run()
    assert not at.exception
    downloads = at.get("download_button")
    assert len(downloads) == 1 and "Download the model (TorchScript)" in str(downloads[0].proto)
    assert load_run(at.session_state["workspace"].private_runs / "fixed").manifest["intervention"] == "tench: P1 off"


def test_the_report_names_the_labelled_prototypes():
    from protolib.report import Report
    from protolib.report.html import render

    run = {
        "backbone": "efficientnet_lite0",
        "fingerprint": "f",
        "k": 3,
        "strategy": "optimized",
        "classes": ["tench"],
        "n_images": 6,
        "data": "/d",
        "split": "val",
        "created": "now",
        "seconds": {"total": 1.0},
        "intervention": "tench: P1 off",
        "prototype_names": {"tench": ["", "fins <b>", ""]},
    }
    page = render(Report({"run": run}, {}))
    assert "Named prototypes" in page and '<td class="text">P2</td><td class="text">fins &lt;b&gt;</td>' in page
    assert "Named prototypes" not in render(Report({"run": {**run, "prototype_names": {}}}, {}))


def test_switch_off_every_background_prototype(env, monkeypatch):
    """Where the data folder has groups.csv and object masks, the table shows each prototype's share on the
    background, one button switches off those the shortcut benchmark's mask rule calls background and another keeps
    only where the others are (its functions stand in here: the tiny data folder has no masks)."""
    import streamlit as st

    from protolib.benchmarks import mask_rule

    fractions = torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.8, 0.3]])
    monkeypatch.setattr(mask_rule, "background_fractions", lambda backbone, run, data, *a, **kw: fractions)
    monkeypatch.setattr(mask_rule, "mask_rule_scales", lambda backbone, run, data, *a, **kw: (fractions <= 0.5).float())
    st.cache_data.clear()
    at = start("pages/intervene.py", env["data"])
    table = next(d.value for d in at.dataframe if "select" in d.value.columns)
    assert table["on the background"].tolist() == pytest.approx(fractions.flatten().tolist())
    button(at, "Switch off every background prototype").click().run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "select" in d.value.columns)
    assert table["scale"].tolist() == ["off", "on", "on", "on", "off", "on"]
    # the other edit: keep only where the object parts (the others) are, as the shortcut benchmark's keep rule
    button(at, "Reset all").click().run()
    button(at, "Keep only where the object parts are").click().run()
    assert not at.exception
    labels = env["run"].classes.tolist()
    keys = {(label, i): f"iv.{edit_of(at)}.{label}.{i}.keep" for label in labels for i in range(3)}
    ticked = {pair for pair, key in keys.items() if at.session_state.get(key)}
    assert ticked == {(labels[c], i) for c, i in (fractions <= 0.5).nonzero().tolist()}
    st.cache_data.clear()


def test_the_shortcut_demo_button_opens_its_run_and_data_folder(env, monkeypatch):
    """The button runs the builder in the job queue with this server's runs folder, then opens what it returns
    (a stand-in builder here; the real one is built in Chromium by tests/test_browser_shortcut.py)."""
    from protolib.benchmarks import shortcut_demo

    calls = []

    def build(runs_root, log=None):
        calls.append(Path(runs_root))
        log("building")
        return env["runs"] / "shared" / "small", env["data"]

    monkeypatch.setattr(shortcut_demo, "build_shortcut_demo", build)
    at = start("pages/intervene.py")
    button(at, "Open the shortcut demo").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert calls == [env["runs"]] and at.session_state["run"] == "small"
    assert at.session_state["data_dir"] == str(env["data"])


def held_out_page(env):
    """Intervene with the held-out features computed, and what an independent check needs: the run, the model, the
    backbone's grid of every held-out photo (N, H, W, D), their labels in the model's 1000 classes and their groups."""
    from protolib.backbones import load_backbone
    from protolib.data import load_image

    at = start("pages/intervene.py", env["data"])
    button(at, "Compute held-out features").click().run()
    run, backbone = env["run"], load_backbone()
    paths = [p for folder in CLASSES for p in image_files(env["data"] / "val" / folder)]
    with torch.no_grad():
        grids = backbone.spatial_features(torch.stack([backbone.preprocessing.transform()(load_image(p)) for p in paths]))
    groups = [f"{p.parent.name} on {'water' if n % 3 % 2 == 0 else 'land'}" for n, p in enumerate(paths)]
    return at, run, backbone, grids.permute(0, 2, 3, 1), run.classes.repeat_interleave(3), groups


def test_leave_out_where_a_part_is_on_the_held_out_split(env):
    """The edit in space on the held-out split: the page's top-1 and worst group after the edit are those of the
    edited model computed independently (the backbone on each photo, the part's presence on its grid, the mean
    of the other cells, the model's own head), with the part whose cells change top-1 most."""
    from protolib.evaluation.intervention import group_accuracy
    from protolib.method.spatial import LEVEL

    at, run, backbone, grids, truth, groups = held_out_page(env)
    weight, bias = backbone.head_weight, backbone.head_bias

    def edited(c, i):
        part = run.nmf_prototypes[c, i] / run.presence_scale[c, i]
        out = (grids.clamp_min(0) @ part) >= LEVEL
        pooled = torch.stack([g[~o].mean(dim=0) if bool((~o).any()) else g.flatten(0, 1).mean(dim=0) for g, o in zip(grids, out)])
        return group_accuracy(pooled @ weight.T + bias, truth, groups), int(out.sum())

    original = group_accuracy(grids.flatten(1, 2).mean(dim=1) @ weight.T + bias, truth, groups)
    choices = {(c, i): edited(c, i) for c in range(2) for i in range(run.k)}
    (c, i), (expected, cells) = max(choices.items(), key=lambda kv: (abs(kv[1][0]["mean"] - original["mean"]), kv[1][1]))
    assert cells > 0 and expected["mean"] != original["mean"]  # the edit moves held-out top-1
    at.session_state[f"iv.{edit_of(at)}.{int(run.classes[c])}.{i}.space"] = True
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert metric(at, "Top-1 before") == f"{100 * original['mean']:.1f} %"
    assert metric(at, "Top-1 after") == f"{100 * expected['mean']:.1f} %"
    assert metric(at, "Worst group after") == f"{100 * expected['worst_group']:.1f} %"
    assert any(c.value.startswith("Edit in space (the model's pooling, not its head): cells left out") for c in at.caption)
    # saved as a new run: its manifest names the part; another page says its figures are without the edit
    button(at, "Save as a new run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    saved = load_run(at.session_state["iv_saved_path"])
    assert saved.spatial_edit.leave_out == ((int(run.classes[c]), i),)
    at.session_state["run"] = at.session_state["iv_saved"]
    at.switch_page("pages/explain.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(c.value.startswith("This run carries an edit in space (cells left out of the pooling where") for c in at.caption)


def test_keep_only_where_parts_are_on_the_held_out_split(env):
    """The other half of the edit in space from the page: "Keep only where these parts are" for two prototypes of
    different classes; each held-out photo pools only the 10 % of its cells where those parts are most present together,
    and the page's top-1 and worst group are those of that model written out by hand (the backbone's grid, the parts'
    summed presence, the mean of the kept cells, the model's own head); the edit saves with the run."""
    from protolib.evaluation.intervention import group_accuracy
    from protolib.method.spatial import KEEP_SHARE

    at, run, backbone, grids, truth, groups = held_out_page(env)
    weight, bias = backbone.head_weight, backbone.head_bias

    chosen = [(0, 0), (1, 1)]  # (class position, prototype)
    score = sum(grids.clamp_min(0) @ (run.nmf_prototypes[c, i] / run.presence_scale[c, i]) for c, i in chosen)
    flat = score.flatten(1)
    n = max(1, round(KEEP_SHARE * flat.shape[1]))
    keep = flat >= flat.topk(n, dim=1).values[:, -1:]
    logits = torch.stack([g.flatten(0, 1)[k].mean(dim=0) for g, k in zip(grids, keep)]) @ weight.T + bias
    expected = group_accuracy(logits, truth, groups)
    for c, i in chosen:
        at.session_state[f"iv.{edit_of(at)}.{int(run.classes[c])}.{i}.keep"] = True
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert metric(at, "Top-1 after") == f"{100 * expected['mean']:.1f} %"
    assert metric(at, "Worst group after") == f"{100 * expected['worst_group']:.1f} %"
    assert any("only the 10 % of each photo's cells where" in c.value for c in at.caption)
    # the photo the page shows (the first held-out tench): its cells outside the kept ones hatched, its edited logit
    shown = next(c.value for c in at.caption if c.value.startswith("Pooling: "))
    left_out, total, logit = re.search(r"Pooling: (\d+) of (\d+) cells left out.*logit (-?[\d.]+)", shown).groups()
    assert (int(left_out), int(total)) == (int((~keep[0]).sum()), keep.shape[1])
    assert abs(float(logit) - float(logits[0, run.classes[0]])) < 1e-3
    button(at, "Save as a new run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    saved = load_run(at.session_state["iv_saved_path"])
    assert saved.spatial_edit.keep_where == tuple(sorted((int(run.classes[c]), i) for c, i in chosen))
    assert saved.spatial_edit.leave_out == () and saved.spatial_edit.keep_share == KEEP_SHARE
