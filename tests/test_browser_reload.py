"""Work survives a reload, in a real Chromium on one `streamlit run app.py`.

A person makes a private run on Decompose; after the browser's reload, and in a second tab of the same
address, it is still listed and opens. Another browser context neither lists it nor opens it by name or
by path, and an address with a made-up or malformed key gets an empty workspace. A decomposition running
when the page is reloaded goes on, and the page shows its progress and then its result. Behind a team's
proxy (``PROTOLIB_USER_HEADER`` set), two contexts sending the same user header share one workspace and
one without it gets its own; without that setting the header changes nothing. The private key of the
address never reaches the server's log or a page.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from protolib.config import SAMPLE_DATA
from tests.browser import CHROMIUM, WAIT, app_server, choose_classes, go, run_options, set_slider, settle

DATA = SAMPLE_DATA
RUN_NAME = "my-private-run"
LONG_RUN = "long-run-survives"
USER_RUN = "alices-run"
HEADER = "X-Forwarded-User"
RUN_WAIT = 240_000

pytestmark = [
    pytest.mark.slow,  # a real Chromium driving the app server
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"the sample photos are not at {DATA}"),
]


def folders(tmp: Path, name: str) -> dict[str, str]:
    return {
        "PROTOLIB_RUNS": str(tmp / name / "runs"),
        "PROTOLIB_CACHE": str(tmp / "cache"),
        "PROTOLIB_UPLOADS": str(tmp / name / "uploads"),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app with private links only (no user header trusted)."""
    tmp = tmp_path_factory.mktemp("reload")
    with app_server(tmp, **folders(tmp, "links")) as url:
        yield {"url": url, "log": tmp / "server.log", "tmp": tmp, "runs": tmp / "links" / "runs"}


def open_context(browser, url: str, headers: dict | None = None):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, extra_http_headers=headers or {})
    page = context.new_page()
    page.set_default_timeout(WAIT)
    page.goto(url, timeout=WAIT)
    page.get_by_role("heading", name="Decompose").wait_for()
    settle(page)
    return context, page


def link_of(page) -> str | None:
    """The private key in the page's address, once the app has put it there."""
    for _ in range(50):
        found = parse_qs(urlparse(page.url).query).get("ws")
        if found:
            return found[0]
        page.wait_for_timeout(100)
    return None


def decompose(page, classes: list[str], per_class: int, k: int, name: str) -> None:
    """Set up a decomposition on Decompose and start it (it is not waited for)."""
    choose_classes(page, classes)
    box = page.get_by_role("spinbutton", name="Images per class", exact=True)
    box.fill(str(per_class))
    box.press("Enter")
    settle(page)
    set_slider(page, "Prototypes per class", k)
    run_name = page.get_by_role("textbox", name="Run name")
    run_name.fill(name)
    run_name.press("Enter")
    settle(page)
    page.get_by_role("button", name="Run decomposition").click()


def refused(page, folder: str) -> bool:
    box = page.get_by_test_id("stSidebar").get_by_role("textbox", name="Data folder")
    box.fill(folder)
    box.press("Enter")
    settle(page)
    alert = page.get_by_test_id("stSidebar").get_by_test_id("stAlert").filter(has_text="cannot be opened here")
    alert.wait_for()
    return alert.count() == 1


def opens_on_prototypes(page) -> None:
    go(page, "Prototypes")
    page.get_by_text("Part maps across the 3 training images of “tench”").wait_for()


def test_a_private_run_survives_a_reload_and_a_second_tab_but_not_another_browser(browser, server):
    context, page = open_context(browser, server["url"])
    others = []
    try:
        link = link_of(page)
        assert link and len(link) == 43
        decompose(page, ["tench"], 3, 2, RUN_NAME)
        page.get_by_test_id("stAlert").filter(has_text=f"Run {RUN_NAME} saved").wait_for(timeout=RUN_WAIT)
        settle(page)
        assert RUN_NAME in run_options(page)
        private = next((server["runs"] / "sessions").glob(f"*/{RUN_NAME}"))

        page.reload()  # a new browser session, the same address
        page.get_by_role("heading", name="Decompose").wait_for()
        settle(page)
        assert link_of(page) == link
        assert RUN_NAME in run_options(page)
        assert "Private: only your workspace sees it" in page.get_by_test_id("stSidebar").inner_text()
        assert "This address is your private key to your workspace" in page.get_by_test_id("stSidebar").inner_text()
        opens_on_prototypes(page)
        assert link_of(page) == link  # switching pages keeps the key in the address

        tab = context.new_page()  # a second tab of the same address
        tab.set_default_timeout(WAIT)
        tab.goto(page.url)
        tab.get_by_role("heading", name="Prototypes").wait_for()
        settle(tab)
        assert RUN_NAME in run_options(tab)
        tab.get_by_text("Part maps across the 3 training images of “tench”").wait_for()
        tab.close()

        # -- another browser, with no key, a made-up key, a malformed one, or the folder's name as key ------
        for address in (
            server["url"],
            f"{server['url']}/?ws={'A' * 43}",
            f"{server['url']}/?ws={link[:-1]}%21",
            f"{server['url']}/?ws={private.parent.name}",
        ):
            other_context, other = open_context(browser, address)
            others.append(other_context)
            assert link_of(other) not in (None, link)
            assert RUN_NAME not in run_options(other)
            assert RUN_NAME not in other.content() and link not in other.content()
        assert refused(other, str(private))  # nor by path
        assert refused(other, str(private.parent))
        assert other.get_by_test_id("stException").count() == 0

        # -- forget me: the workspace is deleted and the old address opens an empty one --------------------
        page.get_by_test_id("stSidebar").get_by_role("button", name="Forget me on this server").click()
        page.get_by_role("button", name="Delete my workspace").click()
        page.get_by_text("Your runs and uploads were deleted from this server").wait_for()
        settle(page)
        assert link_of(page) not in (None, link) and not private.exists()
        again_context, again = open_context(browser, f"{server['url']}/?ws={link}")
        others.append(again_context)
        assert link_of(again) != link and RUN_NAME not in run_options(again)
        assert link not in server["log"].read_text()  # the key is never logged
    except Exception:
        page.screenshot(path=str(server["tmp"] / "failure-reload.png"), full_page=True)
        print(server["log"].read_text()[-4000:])
        raise
    finally:
        for other_context in others:
            other_context.close()
        context.close()


def test_a_running_decomposition_is_found_again_after_a_reload(browser, server):
    context, page = open_context(browser, server["url"])
    try:
        decompose(page, ["tench", "English springer"], 30, 3, LONG_RUN)
        page.get_by_text("Backbone features:").first.wait_for()
        assert page.get_by_test_id("stAlert").filter(has_text=f"Run {LONG_RUN} saved").count() == 0
        assert not list((server["runs"] / "sessions").glob(f"*/{LONG_RUN}"))  # not saved yet: still running
        page.reload()
        page.get_by_role("heading", name="Decompose").wait_for()
        # the job went on: its progress shows, then its result, and it is the current run
        page.get_by_text("Decomposing 2 classes with k = 3").first.wait_for()
        page.get_by_test_id("stAlert").filter(has_text=f"Run {LONG_RUN} saved").wait_for(timeout=RUN_WAIT)
        settle(page)
        assert "2 classes, 60 images, k = 3" in page.get_by_test_id("stMain").inner_text()
        assert "2 classes: tench, English springer" in page.get_by_test_id("stSidebar").inner_text()
        assert LONG_RUN in run_options(page)
    except Exception:
        page.screenshot(path=str(server["tmp"] / "failure-running.png"), full_page=True)
        print(server["log"].read_text()[-4000:])
        raise
    finally:
        context.close()


def test_the_user_header_decides_only_when_the_setting_names_it(browser, server, tmp_path):
    from protolib import identity
    from protolib.backbones import load_backbone
    from protolib.pipeline import run_decomposition
    from protolib.runs import save_run

    env = folders(tmp_path, "team")
    alice = identity.workspace_for(Path(env["PROTOLIB_RUNS"]), Path(env["PROTOLIB_UPLOADS"]), "user", "alice")
    run = run_decomposition(
        load_backbone(), DATA, classes=["n01440764"], images_per_class=3, k=2, cache_dir=Path(env["PROTOLIB_CACHE"])
    )
    save_run(run, alice.private_runs / USER_RUN)  # what alice made earlier, on any device
    contexts = []
    try:
        # -- without the setting (the module's server), the header changes nothing ------------------------
        for _ in range(2):
            context, page = open_context(browser, server["url"], {HEADER: "alice"})
            contexts.append(context)
            assert link_of(page)  # a private link, as for anyone
            assert USER_RUN not in run_options(page)
        links = {link_of(p) for c in contexts for p in c.pages}
        assert len(links) == 2  # two browsers, two workspaces
        # -- behind the proxy: the user's workspace on every context that sends the header --------------
        with app_server(tmp_path, **env, PROTOLIB_USER_HEADER=HEADER) as url:
            for _ in range(2):
                context, page = open_context(browser, url, {HEADER: "alice"})
                contexts.append(context)
                assert USER_RUN in run_options(page) and link_of(page) is None
                assert "belongs to the name you signed in with" in page.get_by_test_id("stSidebar").inner_text()
            for headers in ({}, {HEADER: "bob"}):
                context, page = open_context(browser, url, headers)
                contexts.append(context)
                assert USER_RUN not in run_options(page)
                assert (link_of(page) is None) == bool(headers)  # no header: a private link of its own
    except Exception:
        print((tmp_path / "server.log").read_text()[-4000:])
        raise
    finally:
        for context in contexts:
            context.close()
