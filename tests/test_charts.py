"""The charts the app and the report share (protolib.charts): text from data is drawn as text in every one
of them, and their colours come from the one palette."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from protolib import charts

HOSTILE = ["<b>tench</b>", "<a href='https://example.org'>cassette</a>"]
ROOT = Path(__file__).resolve().parent.parent


def drawn(fig) -> str:
    return json.dumps(fig.to_plotly_json(), default=str)


def test_text_from_data_is_escaped_in_every_chart_that_shows_it():
    figures = {
        "class_bars": charts.class_bars(HOSTILE, [0.5, 0.9]),
        "importance_heatmap": charts.importance_heatmap({n: [0.1, -0.2] for n in HOSTILE}),
        "logit_bars": charts.logit_bars(HOSTILE, [1.0, 2.0], [0.5, 2.5]),
        "waterfall": charts.waterfall(torch.tensor([0.4, -0.1]), 0.2, f"logit of {HOSTILE[0]}", HOSTILE),
        "contribution_bars": charts.contribution_bars(
            [{"run": n, "prototype": "P1", "mean contribution": 0.3, "share": 0.5} for n in HOSTILE]
        ),
    }
    for name, fig in figures.items():
        text = drawn(fig)
        assert "<b>tench" not in text and "<a href" not in text, name  # plotly would draw these as markup
        assert "&lt;b&gt;tench" in text, name


def test_chart_colours_come_from_the_palette():
    """No colour is written out in the charts or the pages: they name it in protolib.palette."""
    hex_colour = re.compile(r"['\"]#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?['\"]")
    files = [*(ROOT / "protolib" / "charts").glob("*.py"), *(ROOT / "pages").rglob("*.py")]
    assert len(files) > 10
    found = {str(f.relative_to(ROOT)): hex_colour.findall(f.read_text()) for f in files}
    assert {f: c for f, c in found.items() if c} == {}
