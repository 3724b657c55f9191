"""Two people on one server, in a real Chromium: two browser contexts (two sessions) on one `streamlit
run app.py`. Session A uploads a zip of photos (2 classes x 4 photos of the sample, renamed) and
decomposes it (k = 2); session B then sees none of A's run names, photos or file names on any page nor
in the run list (only the run published for everyone), and typing A's upload folder into the data
folder box gets the refusal message. A's own pages never show its session id.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from protolib.config import SAMPLE_DATA
from tests.browser import CHROMIUM, app_server, go, new_page, run_options, set_slider, settle

ROOT = Path(__file__).resolve().parents[1]
DATA = SAMPLE_DATA
CLASSES = {"n01440764": "tench", "n02102040": "English springer"}
ZIP_NAME = "private-photos-of-a"  # the zip, and the data folder it becomes
PHOTO = "zz-private-photo"  # A's file names
RUN_NAME = "secret-run-of-a"
PUBLISHED = "team-run"
RUN_WAIT = 150_000

pytestmark = [
    pytest.mark.slow,  # a real Chromium driving the app server
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"the sample photos are not at {DATA}"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free port, runs / cache / uploads in temporary folders, and one published run."""
    from protolib.backbones import load_backbone
    from protolib.pipeline import run_decomposition
    from protolib.runs import save_run

    tmp = tmp_path_factory.mktemp("sharing")
    runs, cache = tmp / "runs", tmp / "cache"
    run = run_decomposition(load_backbone(), DATA, classes=list(CLASSES), images_per_class=3, k=2, cache_dir=cache)
    save_run(run, runs / "shared" / PUBLISHED)
    with app_server(tmp, PROTOLIB_RUNS=str(runs), PROTOLIB_CACHE=str(cache), PROTOLIB_UPLOADS=str(tmp / "uploads")) as url:
        yield {"url": url, "log": tmp / "server.log", "tmp": tmp, "runs": runs}


def photos_zip(folder: Path) -> Path:
    """2 classes x 4 photos of the sample, renamed, in ``<ZIP_NAME>/<wnid>/``."""
    path = folder / f"{ZIP_NAME}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for wnid in CLASSES:
            for i, photo in enumerate(sorted((DATA / "train" / wnid).iterdir())[:4]):
                archive.write(photo, f"{ZIP_NAME}/{wnid}/{PHOTO}-{wnid}-{i}.jpg")
    return path


def page_titles(page) -> list[str]:
    """The navigation bar's page titles (each link's last line: the first is its icon's name)."""
    return [t.strip().splitlines()[-1].strip() for t in page.get_by_test_id("stTopNavLink").all_inner_texts()]


def test_a_session_sees_nothing_of_another_sessions_uploads_and_runs(browser, server, tmp_path):
    context_a, a = new_page(browser, server)
    context_b = b = None
    try:
        # -- A: upload a zip of photos, decompose it with k = 2 ---------------------------------------
        settle(a)
        a.get_by_test_id("stButtonGroup").get_by_role("radio", name="Zip of a dataset").click()
        settle(a)
        a.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(photos_zip(tmp_path)))
        a.get_by_role("button", name="Extract and use this folder").click()
        a.get_by_test_id("stAlert").filter(has_text=f"Extracted “{ZIP_NAME}.zip”").wait_for()
        settle(a)
        folder = a.get_by_test_id("stSidebar").get_by_role("textbox", name="Data folder").input_value()
        assert folder.endswith(f"/{ZIP_NAME}"), folder
        set_slider(a, "Prototypes per class", 2)
        name = a.get_by_role("textbox", name="Run name")
        name.fill(RUN_NAME)
        name.press("Enter")
        settle(a)
        a.get_by_role("button", name="Run decomposition").click()
        a.get_by_test_id("stAlert").filter(has_text=f"Run {RUN_NAME} saved").wait_for(timeout=RUN_WAIT)
        settle(a)
        assert "2 classes, 8 images, k = 2" in a.get_by_test_id("stMain").inner_text()
        sessions = list((server["runs"] / "sessions").iterdir())
        assert len(sessions) == 1 and (sessions[0] / RUN_NAME).is_dir()  # A's private runs folder
        session_id = sessions[0].name
        upload_id = Path(folder).parents[1].name
        titles = page_titles(a)
        assert {"Decompose", "Prototypes", "Explain", "Intervene", "Evaluate"} <= set(titles)
        for title in titles:  # A's own pages never show its session id
            go(a, title)
            assert session_id not in a.content(), title
        go(a, "Prototypes")
        a.get_by_text("Part maps across the 4 training images of “tench”").wait_for()
        assert PHOTO in a.content()  # A sees its own photos (so the search below can find them)

        # -- B: another session on the same server ---------------------------------------------------
        context_b, b = new_page(browser, server)
        settle(b)
        options = run_options(b)
        assert PUBLISHED in options and RUN_NAME not in options, options
        secrets = [RUN_NAME, PHOTO, ZIP_NAME, upload_id, session_id]
        for title in page_titles(b):
            go(b, title)
            html = b.content()
            seen = [s for s in secrets if s in html]
            assert not seen, (title, seen)
        go(b, "Decompose")
        table = b.get_by_test_id("stDataFrame").last.inner_text()
        assert RUN_NAME not in table

        # -- B types A's upload folder into the data folder box: refused --------------------------------
        box = b.get_by_test_id("stSidebar").get_by_role("textbox", name="Data folder")
        box.fill(folder)
        box.press("Enter")
        settle(b)
        refusal = b.get_by_test_id("stSidebar").get_by_test_id("stAlert").filter(has_text="cannot be opened here")
        refusal.wait_for()
        assert (
            "only the sample photos, the generated demos, the server's data folders (none configured) and this "
            "session's own uploads"
        ) in refusal.inner_text()
        assert PHOTO not in b.content() and "tench · 4 images" not in b.get_by_test_id("stMain").inner_text()
        assert b.get_by_test_id("stException").count() == 0
    except Exception:
        for page, who in ((a, "a"), (b, "b")):
            if page is not None:
                page.screenshot(path=str(server["tmp"] / f"failure-{who}.png"), full_page=True)
        print(server["log"].read_text()[-4000:])
        raise
    finally:
        context_a.close()
        if context_b is not None:
            context_b.close()
