"""The report as one self-contained HTML page: plotly.js inlined once (it works offline), figures as
plotly divs, heatmap examples as inline PNGs, and a short sentence per section saying what it shows.
Each section is drawn by its module (``html_method``, ``html_faithfulness``, ``html_comparison``)."""

from __future__ import annotations

import html

from .html_comparison import comparison
from .html_faithfulness import deletion_insertion, intervention, mistakes
from .html_method import axioms, exactness, protoeval, refinement, seed_stability, table3
from .markup import Page, document, table, unavailable
from .sections import OPTIONAL_SECTIONS, SECTIONS, Report

RENDER = {
    "exactness": exactness,
    "table3": table3,
    "refinement": refinement,
    "seed_stability": seed_stability,
    "protoeval": protoeval,
    "axioms": axioms,
    "deletion_insertion": deletion_insertion,
    "intervention": intervention,
    "comparison": comparison,
    "mistakes": mistakes,
}


def _named_prototypes(labels: dict[str, list[str]]) -> str:
    """The names people gave the run's prototypes (class -> one name per prototype, "" unnamed), as a table."""
    rows = [
        [html.escape(name), f"P{i + 1}", html.escape(label)]
        for name, names in labels.items()
        for i, label in enumerate(names)
        if label
    ]
    if not rows:
        return ""
    return "<p class='muted'>Named prototypes:</p>" + table(["class", "prototype", "name"], rows, text=(0, 1, 2))


def render(report: Report) -> str:
    """The whole page as a string."""
    figures, page = report.figures, Page()
    run = figures["run"]
    parts = []
    sections = {**SECTIONS, **{key: title for key, title in OPTIONAL_SECTIONS.items() if key in figures}}
    for key, title in sections.items():
        section = figures.get(key) or {"available": False, "reason": "not computed"}
        body = RENDER[key](section, page, report.images) if section.get("available") else unavailable(section)
        parts.append(f'<section id="{key}"><h2>{html.escape(title)}</h2>{body}</section>')
    nav = "".join(f'<a href="#{key}">{html.escape(title.split(" (")[0])}</a>' for key, title in sections.items())
    intervention_note = (
        f"<p class='muted'>This run carries an intervention: {html.escape(str(run['intervention']))}</p>"
        if run.get("intervention")
        else ""
    ) + _named_prototypes(run.get("prototype_names") or {})
    summary = (
        f"<p class='muted'>{html.escape(run['backbone'])} (weights {html.escape(run['fingerprint'])}) · k = {run['k']} "
        f"prototypes per class · refinement {html.escape(run['strategy'])} · {len(run['classes'])} classes: "
        f"{html.escape(', '.join(run['classes'][:12]))}{' …' if len(run['classes']) > 12 else ''}<br>"
        f"held-out images: {run['n_images']} from {html.escape(run['data'])}/{html.escape(run['split'])} · built "
        f"{html.escape(run['created'])} in {run['seconds']['total']:.0f} s</p>"
    )
    return document(
        f"protoscope report: {run['backbone']}, k = {run['k']}",
        f"<h1>Part-prototype evaluation report</h1>{summary}{intervention_note}<nav>{nav}</nav>"
        + "".join(parts)
        + f"<p class='muted'>{page.figures} figures · the same numbers are in the JSON file beside this page.</p>",
    )


def render_comparison(report: Report) -> str:
    """A page of the comparison section alone (``python -m protolib compare``)."""
    page = Page()
    section = report.figures["comparison"]
    body = comparison(section, page, report.images) if section.get("available") else unavailable(section)
    runs = ", ".join(r["name"] for r in section.get("runs", []))
    return document(
        f"protoscope comparison: {runs}",
        f"<h1>Runs side by side</h1><section id='comparison'><h2>{html.escape(OPTIONAL_SECTIONS['comparison'])}</h2>"
        f"{body}</section>",
    )
