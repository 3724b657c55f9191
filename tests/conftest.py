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
def browser():
    """Debian's Chromium driven by Playwright (``playwright install`` cannot download browsers here)."""
    from playwright.sync_api import sync_playwright

    from tests.browser import ARGS, CHROMIUM

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()
