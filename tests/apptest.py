"""What the modules that drive the app with streamlit.testing's AppTest share (not a test module, so that any
of them can import it): a session started on a page, its widgets found by label, its texts, a small photo.

The app's own folders (runs, cache, uploads) and one small published run come from the ``app_env`` fixture
in conftest.py.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

from protolib import config

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
DATA = config.SAMPLE_DATA
CLASSES = ["n01440764", "n02102040"]  # tench, English springer


def png(colour=(200, 30, 30), size=64) -> bytes:
    rng = np.random.default_rng(sum(colour))
    pixels = (rng.random((size, size, 3)) * 60 + np.array(colour) * 0.7).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def start(page: str | None = None, run: str | None = "small") -> AppTest:
    """The app after its first run, on ``page`` (the sidebar drawn by app.py included), with the
    fixture's run chosen (other tests save runs too, and a new session opens the newest)."""
    at = AppTest.from_file(APP, default_timeout=120)
    if run:
        at.session_state["run"] = run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    if page and page != "pages/decompose.py":
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def classes_widget(at: AppTest):
    return next(m for m in at.multiselect if m.key.startswith("w.dec_classes|"))


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label.startswith(label))


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))
