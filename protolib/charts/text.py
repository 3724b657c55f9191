"""Text from data (class names, prototype names) as plotly draws it: plotly renders ``<a href>``, ``<b>`` and
``<br>`` inside labels and titles, so every such text is escaped before it goes into a chart."""

from __future__ import annotations

import html
from collections.abc import Iterable


def escaped(names: Iterable) -> list[str]:
    """Class names (or any text from data) as plotly labels: shown as text, never as markup."""
    return [html.escape(str(n)) for n in names]


def prototype_title(i: int, label: str = "") -> str:
    """``P2`` or ``P2 “fins”``: a prototype's short name with its label (plain text)."""
    return f"P{i + 1}" + (f" “{label}”" if label else "")


def percent(value: float) -> str:
    """A share as the charts and the report print it: ``91.7 %``."""
    return f"{100 * value:.1f} %"
