"""Shared fixtures: the real sample photos, the embedded pretrained model, and one feature cache
for the whole session (so the backbone runs once per image however many tests use it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from protolib.backbones import load_backbone
from protolib.config import SAMPLE_DATA as DATA


@pytest.fixture(scope="session", autouse=True)
def demos_folder(tmp_path_factory):
    """Generated demos go to a temporary folder, never the user's (the app servers started by the browser tests
    inherit it)."""
    patch = pytest.MonkeyPatch()
    patch.setenv("PROTOLIB_DEMOS", str(tmp_path_factory.mktemp("demos")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    assert (DATA / "train").is_dir(), f"the sample photos are expected at {DATA}"
    return DATA


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(scope="session")
def lite0():
    """EfficientNet-Lite0 with its embedded ImageNet weights (the default backbone)."""
    return load_backbone()


@pytest.fixture(scope="module")
def one_thread():
    """Small models and inputs gain nothing from threads; on a shared 2-core machine, OpenMP threads
    waiting for a busy core made such tests 4 to 6x slower. Modules opt in with ``usefixtures``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_network(monkeypatch):
    """Any download attempt fails loudly instead of hanging (modules opt in with ``usefixtures``)."""

    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def navigation_mode(monkeypatch):
    """Streamlit's AppTest starts every run in the legacy ``pages/`` folder mode; the app runs in navigation mode
    (see pages/common/navigation.py). Modules that drive the app with AppTest opt in with ``usefixtures``."""
    import streamlit.testing.v1.app_test as app_test

    from pages.common import navigation

    monkeypatch.setattr(app_test, "PagesManager", navigation.app_test_pages_manager())


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    """The app's folders for modules that drive it with AppTest (tests/apptest.py): PROTOLIB_RUNS / PROTOLIB_CACHE /
    PROTOLIB_UPLOADS in temporary folders, the temporary folders allowed as data folders, and one small published
    run ("small": Lite0, tench and English springer, 8 photos each, k = 3)."""
    if not (DATA / "train").is_dir():
        pytest.skip(f"the sample photos are not at {DATA}")
    from protolib.pipeline import run_decomposition
    from protolib.runs import save_run
    from tests.apptest import CLASSES

    runs, cache = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("PROTOLIB_RUNS", str(runs))
    patch.setenv("PROTOLIB_CACHE", str(cache))
    patch.setenv("PROTOLIB_UPLOADS", str(tmp_path_factory.mktemp("uploads")))
    patch.setenv("PROTOLIB_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))  # tests' own data folders
    patch.delenv("PROTOLIB_DATA", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: threads only wait for each other on a busy machine
    backbone = load_backbone()
    run = run_decomposition(backbone, DATA, classes=CLASSES, images_per_class=8, k=3, cache_dir=cache)
    save_run(run, runs / "shared" / "small")  # published: every session sees it
    yield {"runs": runs, "cache": cache, "run": "small"}
    torch.set_num_threads(threads)
    patch.undo()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (``playwright install`` cannot download browsers here)."""
    from playwright.sync_api import sync_playwright

    from tests.browser import ARGS, CHROMIUM

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()
