"""End to end in a real Chromium: `streamlit run app.py` as a subprocess, driven with Playwright.

One session decomposes the sample photos through the UI (2 classes x 12 photos, k = 10 and k = 3),
sees part maps in the Prototypes gallery, switches a prototype off on Intervene and sees the logit
change, evaluates, reads the k = 10 prototype cards (no number cut off), and uploads a file that is not
an image. Screenshots of every page go to ``SHOTS``. Two browser contexts at once must not see
each other's choices.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.browser import (
    CHROMIUM,
    DATA,
    RUN_WAIT,
    WAIT,
    app_server,
    choose_classes,
    choose_run,
    compute_held_out_of_run_classes,
    cut_off,
    expect,
    go,
    metric_value,
    new_page,
    open_page,
    selected_classes,
    set_slider,
    settle,
    shoot,
)

pytestmark = [
    pytest.mark.slow,  # a real Chromium driving the app server
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"the sample photos are not at {DATA}"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free port, with its runs and feature cache in temporary folders."""
    tmp = tmp_path_factory.mktemp("browser")
    with app_server(
        tmp, PROTOLIB_RUNS=str(tmp / "runs"), PROTOLIB_CACHE=str(tmp / "cache"), PROTOLIB_UPLOADS=str(tmp / "uploads")
    ) as url:
        yield {"url": url, "log": tmp / "server.log", "tmp": tmp}


def compare_runs_side_by_side(page) -> None:
    """A run of a second backbone (Lite1 when registered, else Lite0 at k = 5), then Compare: matched prototypes
    with their agreement, and the PNG download."""
    from PIL import Image

    from protolib.backbones import available_backbones

    specs = {s.name: s.description for s in available_backbones()}
    backbone, k = ("efficientnet_lite1", 3) if "efficientnet_lite1" in specs else ("efficientnet_lite0", 5)
    go(page, "Decompose")
    if backbone != "efficientnet_lite0":
        page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").filter(has_text="Backbone").click()
        page.get_by_role("option", name=specs[backbone]).click()
        settle(page)
    set_slider(page, "Prototypes per class", k)
    name = f"{backbone}-2cls-k{k}-optimized"
    expect(page.get_by_role("textbox", name="Run name")).to_have_value(name, timeout=WAIT)
    page.get_by_role("button", name="Run decomposition").click()
    page.get_by_test_id("stAlert").filter(has_text=f"Run {name} saved").wait_for(timeout=RUN_WAIT)
    settle(page)

    go(page, "Compare")
    other = "efficientnet_lite0-2cls-k3-optimized"
    runs = page.get_by_test_id("stMultiSelect").filter(has_text="Runs side by side")
    chosen = [t.get_attribute("title") for t in runs.locator("[data-tag] span[title]").all()]
    if chosen != [name, other]:  # the session's run and the newest run of another model sharing its classes
        raise AssertionError(chosen)
    page.get_by_test_id("stMetric").filter(has_text="Agreement").wait_for(timeout=RUN_WAIT)
    settle(page)
    agreement = float(metric_value(page, "Agreement"))
    assert -1 <= agreement <= 1
    assert metric_value(page, f"{name} ↔ {other}") == f"{agreement:.2f}"  # two runs: one pair
    text = page.get_by_test_id("stMain").inner_text()
    assert "↔ P1, r = " in text  # the second run's heatmaps name their match in the first
    assert "Matched prototypes" in text and "Where the runs disagree" in text
    with page.expect_download(timeout=WAIT) as download:
        page.get_by_test_id("stDownloadButton").filter(has_text="Download as PNG").click()
    saved = download.value.path()
    with Image.open(saved) as image:
        image.verify()
    with Image.open(saved) as image:
        assert image.format == "PNG" and image.width > 600
    assert download.value.suggested_filename.endswith("-tench.png")
    shoot(page, "compare")


def test_decompose_explore_intervene_evaluate(browser, server, tmp_path):
    with open_page(browser, server) as page:
        # -- Decompose: 2 classes x 12 photos, k = 10 and then k = 3 -------------------------------
        settle(page)
        choose_classes(page, ["tench", "English springer"])
        assert selected_classes(page) == ["tench", "English springer"]
        per_class = page.get_by_role("spinbutton", name="Images per class", exact=True)
        per_class.fill("12")
        per_class.press("Enter")
        settle(page)
        for k in (10, 3):
            set_slider(page, "Prototypes per class", k)
            name = f"efficientnet_lite0-2cls-k{k}-optimized"
            expect(page.get_by_role("textbox", name="Run name")).to_have_value(name, timeout=WAIT)
            page.get_by_role("button", name="Run decomposition").click()
            saved = page.get_by_test_id("stAlert").filter(has_text=f"Run {name} saved")
            saved.wait_for(timeout=RUN_WAIT)
            settle(page)
            assert f"2 classes, 24 images, k = {k}" in saved.inner_text()
        assert "2 classes: tench, English springer" in page.get_by_test_id("stSidebar").inner_text()
        shoot(page, "decompose")

        # -- Prototypes: part maps in the gallery -------------------------------------------------
        go(page, "Prototypes")
        page.get_by_text("Part maps across the 12 training images of “tench”").wait_for()
        images = page.get_by_test_id("stImage").locator("img")
        assert images.count() >= 12 + 6  # the gallery and the top photos of the first prototype
        widths = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        assert sum(w > 0 for w in widths) >= 18, widths
        cards = page.get_by_test_id("stMetric").filter(has_text="mean contribution")
        assert cards.count() == 3  # one card per prototype, led by its contribution
        assert not cut_off(page, "stMetricValue")
        page.get_by_text("NMF parts, before refinement").first.wait_for()
        shoot(page, "prototypes")

        # -- Explain: top-5, waterfall, part map, heatmaps ---------------------------------------
        go(page, "Explain")
        page.get_by_text("Top-5 classes").wait_for()
        page.get_by_test_id("stPlotlyChart").locator(".main-svg").first.wait_for()
        assert "Each prototype's heatmap" in page.get_by_test_id("stMain").inner_text()
        shoot(page, "explain")

        # -- Intervene: switching P1 off changes the logit, live ---------------------------------
        go(page, "Intervene")
        label = "Logit of “tench”"
        before = metric_value(page, label)
        page.locator("label:has(input[aria-label='P1 on'])").first.click()
        deadline = time.monotonic() + WAIT / 1000
        while metric_value(page, label) == before and time.monotonic() < deadline:
            page.wait_for_timeout(100)
        after = metric_value(page, label)
        assert float(after) != float(before)
        delta = page.get_by_test_id("stMetric").filter(has_text=label).first.get_by_test_id("stMetricDelta")
        assert float(delta.inner_text().strip()) == pytest.approx(float(after) - float(before), abs=0.011)
        # the same edit on the held-out photos of the run's classes (10 per class)
        compute_held_out_of_run_classes(page, 10)
        page.get_by_role("button", name="Run the oracle").click()
        page.get_by_test_id("stMetric").filter(has_text="Top-1 with the oracle").wait_for()
        settle(page)
        shoot(page, "intervene")

        # -- Evaluate: the held-out features are already there -----------------------------------
        go(page, "Evaluate")
        page.get_by_test_id("stMetric").filter(has_text="Top-1, prototype network").wait_for()
        page.get_by_test_id("stPlotlyChart").nth(1).locator(".main-svg").first.wait_for()
        top1 = metric_value(page, "Top-1, original model")
        assert metric_value(page, "Top-1, prototype network") == top1
        page.get_by_text("Reconstruction errors against k").wait_for()
        assert page.get_by_test_id("stPlotlyChart").count() == 3  # Table 3, fidelity, errors against k
        shoot(page, "evaluate")

        # -- Prototypes at k = 10: ten cards, every number whole ---------------------------------
        go(page, "Prototypes")
        choose_run(page, "efficientnet_lite0-2cls-k10-optimized")
        expect(cards).to_have_count(10, timeout=WAIT)
        settle(page)
        values = [v.strip() for v in page.get_by_test_id("stMetricValue").all_inner_texts()]
        assert len(values) == 10 and all(isinstance(float(v), float) for v in values), values
        assert not cut_off(page, "stMetricValue"), cut_off(page, "stMetricValue")
        assert not cut_off(page, "stMetricLabel"), cut_off(page, "stMetricLabel")
        page.screenshot(path=str(server["tmp"] / "prototypes-k10.png"), full_page=True)

        # -- an upload that is not an image gets a clear message ----------------------------------
        go(page, "Explain")
        page.get_by_test_id("stButtonGroup").get_by_role("radio", name="Upload").click()
        settle(page)
        notes = tmp_path / "notes.txt"
        notes.write_text("this is not a photo")
        page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(notes))
        alert = page.get_by_test_id("stAlert").filter(has_text="is not an image that can be read")
        alert.wait_for()
        assert "“notes.txt”" in alert.inner_text()
        assert page.get_by_test_id("stException").count() == 0

        # -- Compare: another backbone's run beside the k = 3 run, on the same photos of tench -------
        compare_runs_side_by_side(page)


def test_two_sessions_do_not_see_each_others_choices(browser, server):
    first, page_a = new_page(browser, server)
    second, page_b = new_page(browser, server)
    try:
        settle(page_a)
        settle(page_b)
        choose_classes(page_a, ["church"])
        assert selected_classes(page_a) == ["church"]
        page_b.reload()
        page_b.get_by_role("heading", name="Decompose").wait_for()
        settle(page_b)
        assert "church" in selected_classes(page_b) and len(selected_classes(page_b)) == 10
        choose_classes(page_b, ["golf ball"])
        page_a.get_by_test_id("stSlider").filter(has_text="Prototypes per class").wait_for()
        assert selected_classes(page_a) == ["church"]  # untouched by the other session
        go(page_a, "Prototypes")
        go(page_a, "Decompose")
        assert selected_classes(page_a) == ["church"]  # and kept across page switches
    finally:
        first.close()
        second.close()
