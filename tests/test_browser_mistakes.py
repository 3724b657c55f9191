"""The Mistakes page in a real Chromium (`streamlit run app.py`, driven with Playwright), from an empty server:
Build the demo, find that its 1000-way mistakes all go to classes without prototypes, open the mistakes demo
(the sample photos' probe, every class decomposed), see a mistake one switch fixes, open it in Intervene and
find the edit applied, the true class on top and the culprit class's logit equal to what protolib computes."""

from __future__ import annotations

from pathlib import Path

import pytest

from protolib.config import SAMPLE_DATA
from tests.browser import CHROMIUM, RUN_WAIT, app_server, metric_value, open_page, settle, shoot

pytestmark = [
    pytest.mark.slow,  # a real Chromium driving the app server
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not (SAMPLE_DATA / "train").is_dir(), reason=f"the sample photos are not at {SAMPLE_DATA}"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-mistakes")
    runs, cache = tmp / "runs", tmp / "cache"
    with app_server(tmp, PROTOLIB_RUNS=str(runs), PROTOLIB_CACHE=str(cache), PROTOLIB_UPLOADS=str(tmp / "uploads")) as url:
        yield {"url": url, "log": tmp / "server.log", "tmp": tmp, "runs": runs, "cache": cache}


def library_first_card(server):
    """The first card as protolib finds it on the published mistakes demo: (true, culprit class, after-logit
    of the culprit class, predicted) names and value."""
    from protolib.data.features import split_features
    from protolib.evaluation.mistakes import find_culprits
    from protolib.mistake_demo import probe_demo_path
    from protolib.runs import load_run

    run = load_run(probe_demo_path(server["runs"]))
    backbone = run.load_backbone("cpu")
    sf = split_features(backbone, SAMPLE_DATA, "val", cache_dir=server["cache"])
    head = run.head(backbone)
    card = find_culprits(head, sf.pooled, sf.labels).by_one[0]
    culprit = card.switched[0][0]
    after = dict(card.top_after)[culprit]
    return backbone.class_names[card.label], backbone.class_names[culprit], after, backbone.class_names[card.predicted]


def compute_held_out(page) -> None:
    page.get_by_role("button", name="Compute held-out features").click()
    page.get_by_test_id("stMetric").filter(has_text="Fixed by one switch").wait_for(timeout=RUN_WAIT)
    settle(page)


def test_demo_mistake_opens_in_intervene_fixed(browser, server):
    with open_page(browser, server) as page:
        page.get_by_role("button", name="Build the demo").click()
        page.get_by_role("heading", name="Prototypes", exact=True).wait_for(timeout=RUN_WAIT)
        settle(page)
        page.get_by_test_id("stTopNavLink").filter(has_text="Mistakes").click()
        page.get_by_role("heading", name="Mistakes", exact=True).wait_for()
        settle(page)
        compute_held_out(page)
        # the 1000-way demo: its mistakes all go to classes that were not decomposed, and the page says so
        assert metric_value(page, "Fixed by one switch") == "0"
        page.get_by_text("a class above the true one was not decomposed").first.wait_for()
        page.get_by_role("button", name="Open the mistakes demo (the sample photos' probe)").click()
        page.get_by_role("button", name="Compute held-out features").wait_for(timeout=RUN_WAIT)
        settle(page)
        compute_held_out(page)
        fixed = int(metric_value(page, "Fixed by one switch"))
        assert fixed >= 1
        cards = page.get_by_role("button", name="Open in Intervene")
        assert cards.count() >= 1
        true, culprit, after, predicted = library_first_card(server)
        text = page.get_by_test_id("stMain").inner_text()  # the first card is the library's first (clearest)
        assert f"{true} taken for {predicted}" in text and f"Switch off {culprit}" in text
        shoot(page, "mistakes")
        with page.expect_download(timeout=RUN_WAIT) as download:  # the story, in one click
            page.get_by_test_id("stDownloadButton").filter(has_text="Write the story").click()
        story = download.value.path().read_text(encoding="utf-8")
        assert all(f'<section id="{s}">' in story for s in ("model", "prototypes", "mistakes", "harmful"))
        assert "<script" not in story and story.count("data:image/png;base64,") > 10

        cards.first.click()
        page.get_by_role("heading", name="Intervene", exact=True).wait_for()
        settle(page)
        main = page.get_by_test_id("stMain")
        main.get_by_text("Predicted class", exact=True).wait_for()
        assert f"changed from {predicted}" in main.inner_text()
        result = main.locator("p", has=page.get_by_text("Predicted class", exact=True)).inner_text()
        assert result.split("\n")[-1].strip() == true  # the true class is on top with the edit applied
        assert float(metric_value(page, f"Logit of “{culprit}”")) == pytest.approx(after, abs=0.006)
        assert page.get_by_test_id("stException").count() == 0
