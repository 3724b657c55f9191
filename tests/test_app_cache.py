"""Decompose shows the feature cache (size, entries, limit, location) and clears it; the sidebar offers the
download of a missing backbone's weights with its size, and says where the file would come from and go."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from protolib.data import feature_cache
from protolib.data.features import extract_features

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def app_env(tmp_path, monkeypatch, navigation_mode):
    monkeypatch.setenv("PROTOLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PROTOLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PROTOLIB_UPLOADS", str(tmp_path / "uploads"))
    monkeypatch.setenv("PROTOLIB_CACHE_LIMIT_MB", "300")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("PROTOLIB_WEIGHTS_MIRROR", "https://models.example.org/ml")
    monkeypatch.delenv("PROTOLIB_DATA", raising=False)
    return tmp_path


def test_decompose_shows_the_cache_and_clears_it(app_env, lite0, data_dir):
    extract_features(lite0, sorted((data_dir / "train" / "n01440764").iterdir())[:2])  # one entry
    entries, size = feature_cache.usage()
    assert entries == 1
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    caption = "\n".join(c.value for c in at.caption if "Feature cache" in c.value)
    assert f"{size / 1024**2:,.1f} MB in 1 entries (limit 300 MB" in caption and str(app_env / "cache") in caption
    next(b for b in at.button if b.label == "Clear the cache").click().run()
    assert not at.exception and feature_cache.usage() == (0, 0)
    assert next(b for b in at.button if b.label == "Clear the cache").disabled


def test_sidebar_offers_the_download_with_its_size_source_and_place(app_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.sidebar.selectbox(key="w.backbone").set_value("resnet34").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(b.label == "Download weights (83.3 MB)" for b in at.sidebar.button)
    where = "\n".join(c.value for c in at.sidebar.caption)
    assert "https://models.example.org/ml/resnet34-b627a593.pth" in where
    assert str(app_env / "torch" / "hub" / "checkpoints") in where
