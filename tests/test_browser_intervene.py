"""Repairing a model in a real Chromium (`streamlit run app.py`, driven with Playwright), on a tiny published
run (EfficientNet-Lite0, 2 classes x 4 photos of the sample, k = 3) and 4 held-out photos per class.

On Intervene: tick two prototypes in the table of every prototype, switch them off together and see the
held-out accuracy change; name a prototype in the table, save the name and see it on Prototypes; save the
edited head as a run and download it as a TorchScript model, which torch.jit.load runs.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
import torch

from protolib.config import SAMPLE_DATA
from tests.browser import CHROMIUM, WAIT, app_server, compute_held_out_of_run_classes, go, metric_value, open_page, settle

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["n01440764", "n02102040"]  # tench, English springer
PER_CLASS = 4  # held-out photos per class
RUN = "tiny"

pytestmark = [
    pytest.mark.slow,  # a real Chromium driving the app server
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not (SAMPLE_DATA / "train").is_dir(), reason=f"the sample photos are not at {SAMPLE_DATA}"),
]


def pair_that_changes_accuracy(run, backbone, cache) -> list[tuple[int, int]]:
    """Two prototypes whose switching off changes the run's 2-way top-1 on the held-out photos the page uses."""
    from protolib.data.features import split_features
    from protolib.evaluation.metrics import among_decomposed
    from protolib.evaluation.metrics import top1 as accuracy

    sf = split_features(backbone, SAMPLE_DATA, "val", PER_CLASS, CLASSES, cache_dir=cache)
    head, pooled, truth = among_decomposed(run.head(backbone), sf.pooled, sf.labels)
    contributions = head.contributions(pooled)
    before = accuracy(head.logits(pooled, contributions), truth)
    for pair in itertools.combinations([(c, i) for c in range(2) for i in range(run.k)], 2):
        scale = torch.ones(2, run.k)
        for c, i in pair:
            scale[c, i] = 0
        if accuracy(head.logits(pooled, contributions, scale), truth) != before:
            return list(pair)
    raise AssertionError("no pair of prototypes changes the held-out accuracy")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free port, its runs and cache in temporary folders, the tiny run published; and the two
    prototypes to switch off."""
    from protolib.backbones import load_backbone
    from protolib.pipeline import run_decomposition
    from protolib.runs import save_run

    tmp = tmp_path_factory.mktemp("browser-intervene")
    runs, cache = tmp / "runs", tmp / "cache"
    backbone = load_backbone()
    run = run_decomposition(backbone, SAMPLE_DATA, classes=CLASSES, images_per_class=4, k=3, cache_dir=cache)
    save_run(run, runs / "shared" / RUN)
    pair = pair_that_changes_accuracy(run, backbone, cache)
    with app_server(tmp, PROTOLIB_RUNS=str(runs), PROTOLIB_CACHE=str(cache), PROTOLIB_UPLOADS=str(tmp / "uploads")) as url:
        yield {"url": url, "log": tmp / "server.log", "tmp": tmp, "runs": runs, "pair": pair, "k": run.k}


ROW, HEADER = 35, 35  # px: the height of a table row and of its header (st.data_editor's defaults)


def prototype_table(page):
    """The table of every prototype (the page's second table: the photo's top classes come first)."""
    grid = page.get_by_test_id("stDataFrame").nth(1)
    grid.evaluate("e => e.scrollIntoView({block: 'center'})")  # clear of the navigation bar at the top
    page.wait_for_timeout(300)
    return grid


def click_cell(page, row: int) -> None:
    """Put the table's cursor on the first cell (select) of ``row``; the keyboard then moves and edits. The
    table is drawn on a canvas: click where the cell is, until the table has the keyboard's focus."""
    for _ in range(5):
        grid = prototype_table(page)
        box = grid.bounding_box()
        x, y = box["x"] + 20, box["y"] + HEADER + ROW * row + ROW / 2
        page.mouse.move(x, y)
        page.wait_for_timeout(200)
        page.mouse.click(x, y)
        page.wait_for_timeout(300)
        if grid.evaluate("g => g.contains(document.activeElement)"):
            return
        settle(page)
    raise AssertionError(f"row {row} of the prototype table could not be clicked")


def wait_for_change(page, label: str, before: str) -> str:
    deadline = time.monotonic() + WAIT / 1000
    while metric_value(page, label) == before and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    return metric_value(page, label)


def test_select_switch_off_label_save_and_download(browser, server, tmp_path):
    with open_page(browser, server) as page:
        settle(page)
        go(page, "Intervene")
        page.get_by_text("Every prototype of the run").wait_for()
        # the held-out photos of the run's classes, as a 2-way classifier
        compute_held_out_of_run_classes(page, PER_CLASS)
        settle(page)
        page.locator('label:has(input[aria-label="Classify among the run\'s classes only"])').click()
        settle(page)
        before = metric_value(page, "Top-1 after")
        assert before == metric_value(page, "Top-1 before")

        # -- tick two prototypes in the table and switch them off together --------------------------------
        k = server["k"]
        for c, i in server["pair"]:
            click_cell(page, c * k + i)
            page.keyboard.press(" ")
            settle(page)
        page.get_by_text("2 selected:").wait_for()
        page.get_by_role("button", name="Switch selected off").click()
        after = wait_for_change(page, "Top-1 after", before)
        assert after != before, (before, after)
        settle(page)
        intervention = page.get_by_text("Intervention:").inner_text()
        assert intervention.count(" off") == 2, intervention

        # -- name a prototype of tench in the table and save the name with the run --------------------------
        # (not a row just ticked: a click on the cell under the cursor would tick it again)
        i = next(i for i in range(k) if (0, i) not in server["pair"])
        click_cell(page, i)
        for _ in range(4):  # select, class, prototype, colour: then the name
            page.keyboard.press("ArrowRight")
        page.keyboard.press("Enter")  # opens the cell's editor
        page.locator("textarea.gdg-input").wait_for()
        page.keyboard.type("beak", delay=60)
        page.keyboard.press("Enter")
        settle(page)
        save = page.get_by_role("button", name="Save 1 name in your own copy of this published run")
        save.click()  # the published run is read-only: the session gets its own labelled copy
        page.get_by_test_id("stAlert").filter(has_text="Names saved with run “tiny-labelled”").wait_for()
        settle(page)
        assert metric_value(page, "Top-1 after") == after  # the edits went with the copy
        go(page, "Prototypes")
        page.get_by_role("tab", name=f"Prototype {i + 1} · beak").wait_for()
        assert f"Prototype {i + 1} · beak" in page.get_by_test_id("stMain").inner_text()

        # -- save the edited head as a run, and download it as a model -------------------------------------
        go(page, "Intervene")
        page.get_by_text("Every prototype of the run").wait_for()
        name = page.get_by_role("textbox", name="New run name")
        name.fill("tiny-repaired")
        name.press("Enter")
        settle(page)
        page.get_by_role("button", name="Save as a new run").click()
        page.get_by_test_id("stAlert").filter(has_text="Saved as run “tiny-repaired”").wait_for()
        settle(page)
        with page.expect_download(timeout=WAIT) as download:
            page.get_by_test_id("stDownloadButton").filter(has_text="Download the model (TorchScript)").click()
        assert download.value.suggested_filename == "tiny-repaired.pt"
        saved = tmp_path / "model.pt"
        download.value.save_as(saved)
        files = {"protoscope.json": ""}
        model = torch.jit.load(str(saved), _extra_files=files)
        meta = json.loads(files["protoscope.json"])
        assert meta["prototype_names"]["tench"][i] == "beak" and meta["intervention"].count(" off") == 2
        with torch.no_grad():
            assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
        assert page.get_by_test_id("stException").count() == 0
