"""The building blocks of the report's HTML pages: the style sheet, number formats, tables, cards, inline
pictures, and the figures (plotly divs; plotly.js is inlined once per page, so the page works offline).
Every text from data that goes through these blocks is escaped, except where a cell is given as HTML."""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from ..palette import TEAL

CSS = f"""
body{{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2733;background:#f6f7f9}}
main{{max-width:1100px;margin:0 auto;padding:24px 28px 60px}}
h1{{font-size:26px;margin:8px 0 4px}} h2{{font-size:20px;margin:0 0 6px;color:#0f4c5c}}
section{{background:#fff;border:1px solid #e2e6ea;border-radius:10px;padding:18px 22px;margin:18px 0}}
p.lead{{margin:4px 0 12px;color:#44515e;line-height:1.45}} .muted{{color:#6b7885;font-size:13px}}
.cards{{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0 12px}}
.card{{border:1px solid #e2e6ea;border-radius:8px;padding:8px 14px;min-width:150px}}
.card b{{display:block;font-size:20px;margin-top:2px}} .card span{{font-size:12px;color:#6b7885}}
table{{border-collapse:collapse;margin:8px 0 12px;font-size:13.5px}}
th,td{{border-bottom:1px solid #e8ebee;padding:4px 10px;text-align:right}} th{{background:#f1f4f6}}
td:first-child,th:first-child,td.text,th.text{{text-align:left}}
.pass{{color:#1b7f3b;font-weight:600}} .fail{{color:#b3261e;font-weight:600}}
.gallery td{{padding:2px;text-align:center;font-size:12px}} .gallery img{{width:112px;height:112px;border-radius:4px}}
.row{{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:12px}}  /* fixed columns: plots size once */
nav a{{margin-right:12px;font-size:13px;color:{TEAL}}}
.unavailable{{background:#fff6e5;border-left:4px solid #e9a23b;padding:8px 12px}}
"""


def fmt(value: object) -> str:
    """A table cell's number (3 decimals, or 3 significant digits when tiny), or its text escaped."""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return html.escape(str(value))


def table(header: list[str], rows: list[list], cls: str = "", text: tuple[int, ...] = ()) -> str:
    """Numbers right-aligned; the columns in ``text`` (indices) left-aligned, as prose reads. A cell given as
    a string is HTML (escape text from data before), any other value goes through ``fmt``."""

    def td(j: int, c: object) -> str:
        return f'<td class="{"text" if j in text else ""}">{c if isinstance(c, str) else fmt(c)}</td>'

    head = "".join(f'<th class="{"text" if j in text else ""}">{html.escape(h)}</th>' for j, h in enumerate(header))
    body = "".join("<tr>" + "".join(td(j, c) for j, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def cards(items: list[tuple[str, str, str]]) -> str:
    """A row of cards: (caption, value, note), all escaped."""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><span>{html.escape(a)}</span><b>{html.escape(b)}</b><span>{html.escape(c)}</span></div>'
            for a, b, c in items
        )
        + "</div>"
    )


def img(images: dict, key: str, alt: str) -> str:
    """The picture ``images[key]`` (base64 PNG) inline, or "" when the report has none by that name."""
    data = images.get(key)
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">' if data else ""


def unavailable(section: dict) -> str:
    """What a section that could not be computed shows instead: its reason."""
    return f'<p class="unavailable">Not computed: {html.escape(section.get("reason", "unknown reason"))}</p>'


class Page:
    """Collects the figures so that each gets a unique id and the page can count them."""

    def __init__(self) -> None:
        self.figures = 0

    def figure(self, fig: go.Figure, title: str, height: int = 340, **layout: object) -> str:
        """``fig`` (from ``protolib.charts``) in the report's frame: its title, size, white template and legend below."""
        self.figures += 1
        defaults = {"margin": {"l": 50, "r": 20, "t": 50, "b": 40}, "legend": {"orientation": "h", "y": -0.2}}
        fig.update_layout(
            title={"text": title, "font": {"size": 14}}, height=height, template="plotly_white", **{**defaults, **layout}
        )
        return (
            '<div class="figure">'
            + fig.to_html(
                full_html=False,
                include_plotlyjs=False,
                div_id=f"figure-{self.figures}",
                config={"displayModeBar": False, "responsive": True},
            )
            + "</div>"
        )


def document(title: str, body: str) -> str:
    """A whole page: ``title`` (escaped here), the style sheet, plotly.js inlined, and ``body`` (HTML)."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        f"<style>{CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body><main>"
        f"{body}</main></body></html>"
    )
