"""What the browser tests share: Chromium's place and flags, the bounds on waits, the app as a subprocess on a
free port, and the steps a person takes on a page (switch pages, move a slider, wait until the script run is over).
Not a test module, so that conftest.py and every browser test module can import it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from protolib.config import SAMPLE_DATA

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
#: where the pages' screenshots go: an ignored folder, so that running the tests leaves the tree as it was. The README's
#: pictures are regenerated on purpose: PROTOLIB_SCREENSHOTS=docs/screenshots .venv/bin/python -m pytest tests/test_browser*.py
SHOTS = Path(os.environ.get("PROTOLIB_SCREENSHOTS") or ROOT / "test-artifacts" / "screenshots")
DATA = SAMPLE_DATA
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT = 60_000  # ms: the bound on any single wait
RUN_WAIT = 150_000  # ms: a decomposition, first backbone load included


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, seconds: float) -> bool:
    """Whether the Streamlit server at ``url`` answers its health check within ``seconds`` (False as soon as
    its process has ended)."""
    deadline = time.monotonic() + seconds
    while server.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


@contextmanager
def app_server(tmp: Path, **env_vars: str):
    """The app on a free port with ``env_vars`` (runs, cache... in temporary folders) and no user data
    settings; yields its URL, and stops it afterwards."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_vars)  # small batches on 2 shared cores: threads only wait
    for name in ("PROTOLIB_DATA", "PROTOLIB_DATA_ROOTS"):
        if name not in env_vars:
            env.pop(name, None)
    log_path = tmp / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        if not wait_healthy(url, proc, 60):
            proc.kill()
            pytest.fail("the app did not start:\n" + log_path.read_text()[-3000:])
        try:
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def expect(locator):
    from playwright.sync_api import expect

    return expect(locator)


def new_page(browser, server):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT)
    page.goto(server["url"], timeout=WAIT)
    page.get_by_role("heading", name="Decompose").wait_for()
    return context, page


def compute_held_out_of_run_classes(page, per_class: int) -> None:
    """On Intervene: compute the held-out features of the run's classes, ``per_class`` photos each."""
    held_out = page.get_by_role("spinbutton", name="Images per class", exact=True)
    held_out.fill(str(per_class))
    held_out.press("Enter")
    settle(page)
    page.locator('label:has(input[aria-label="Only the run\'s classes"])').click()
    settle(page)
    page.get_by_role("button", name="Compute held-out features").click()
    page.get_by_test_id("stMetric").filter(has_text="Top-1 after").wait_for()


@contextmanager
def open_page(browser, server):
    """A new page on the app, closed afterwards; on a failure, a screenshot (``tmp/failure.png``) and the tail of
    the server's log."""
    context, page = new_page(browser, server)
    try:
        yield page
    except Exception:
        page.screenshot(path=str(server["tmp"] / "failure.png"), full_page=True)
        print(server["log"].read_text()[-4000:])
        raise
    finally:
        context.close()


def settle(page, quiet_ms: int = 600) -> None:
    """Wait (bounded) until the script run has finished: no running indicator for ``quiet_ms``."""
    deadline = time.monotonic() + WAIT / 1000
    quiet_since = None
    while time.monotonic() < deadline:
        running = page.locator("[data-testid=stStatusWidget]").count() > 0
        now = time.monotonic()
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif (now - quiet_since) * 1000 >= quiet_ms:
            return
        page.wait_for_timeout(100)
    raise AssertionError("the app kept running for more than a minute")


def go(page, title: str) -> None:
    """Switch pages with the navigation bar (the session, and its choices, stay)."""
    page.get_by_test_id("stTopNavLink").filter(has_text=title).click()
    page.get_by_role("heading", name=title, exact=True).wait_for()
    settle(page)


def shoot(page, name: str) -> None:
    """A screenshot of the whole page (the viewport grows to the content's height)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate(
        "() => Math.max(...['stMain', 'stMainBlockContainer', 'stAppViewContainer']"
        ".map(id => document.querySelector(`[data-testid=${id}]`)?.scrollHeight || 0))"
    )
    page.set_viewport_size({"width": 1440, "height": int(min(max(height + 40, 900), 4200))})
    page.wait_for_timeout(1200)  # charts re-lay out
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size({"width": 1440, "height": 1000})
    page.wait_for_timeout(300)


def choose_classes(page, names: list[str]) -> None:
    classes = page.get_by_test_id("stMultiSelect").filter(has_text="Classes")
    classes.get_by_role("button", name="Clear all").click()
    settle(page)
    box = classes.get_by_role("combobox")
    for name in names:
        box.click()
        box.fill(name)
        page.get_by_role("option", name=f"{name} · 100 images").click()
        settle(page)
    page.keyboard.press("Escape")


def set_slider(page, label: str, value: int) -> None:
    """Move a slider with the keyboard, one step at a time, until the app has the value."""
    slider = page.get_by_test_id("stSlider").filter(has_text=label).get_by_role("slider")
    for _ in range(20):
        now = int(float(slider.input_value()))
        if now == value:
            break
        slider.focus()
        slider.press("ArrowRight" if value > now else "ArrowLeft")
        expect(slider).not_to_have_value(str(now), timeout=WAIT)
        page.wait_for_timeout(300)
        settle(page)
    slider.blur()
    settle(page)
    assert int(float(slider.input_value())) == value


def choose_run(page, name: str) -> None:
    """Make ``name`` the current run with the sidebar's run selector."""
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").filter(has_text="Run").click()
    page.get_by_role("option", name=name).click()
    settle(page)


def cut_off(page, testid: str) -> list[str]:
    """The texts of the elements ``testid`` that do not fit their box (shown truncated, e.g. "−0…")."""
    return page.get_by_test_id(testid).evaluate_all(
        "els => els.filter(e => [e, ...e.querySelectorAll('*')].some(n => n.scrollWidth > n.clientWidth + 1)).map(e => e.innerText)"
    )


def selected_classes(page) -> list[str]:
    tags = page.get_by_test_id("stMultiSelect").filter(has_text="Classes").locator("[data-tag] span[title]")
    return [t.get_attribute("title").split(" · ")[0] for t in tags.all()]


def metric_value(page, label: str) -> str:
    metric = page.get_by_test_id("stMetric").filter(has_text=label).first
    return metric.get_by_test_id("stMetricValue").inner_text().strip()


def run_options(page) -> list[str]:
    """The run list of the sidebar, as its dropdown shows it."""
    sidebar = page.get_by_test_id("stSidebar")
    if sidebar.get_by_test_id("stSelectbox").filter(has_text="Run").count() == 0:
        return []
    sidebar.get_by_test_id("stSelectbox").filter(has_text="Run").click()
    options = [o.strip() for o in page.get_by_role("option").all_inner_texts()]
    page.keyboard.press("Escape")
    settle(page)
    return options
