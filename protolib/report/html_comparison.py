"""The report's comparison section as HTML: runs side by side on the same photos (the paper's Figure 3),
their agreement per class, matched prototypes, contributions and a gallery of heatmaps where they disagree."""

from __future__ import annotations

import html

from .. import charts
from ..charts import percent
from .markup import Page, cards, img, table


def _match_caption(entry: dict, run: int, column: int, prototype: int) -> str:
    """A heatmap's caption in the comparison gallery: its contribution and share, and its match to the first run."""
    side = entry["runs"][run]
    text = f"P{prototype} {side['mean_contribution'][prototype - 1]:+.2f} ({100 * side['share'][prototype - 1]:.0f} %)"
    if run > 0 and column < entry["runs"][0]["k"]:
        pair = next(p for p in entry["pairs"] if p["a"] == entry["runs"][0]["name"] and p["b"] == side["name"])
        r = next((m[2] for m in pair["matches"] if m[0] == column + 1 and m[1] == prototype), None)
        if r is not None:
            text += f"<br>↔ P{column + 1} · r = {r:+.2f}"
    return text


def comparison(s: dict, page: Page, images: dict) -> str:
    """Runs side by side on the same photos of a class: agreement, matched prototypes, heatmaps."""
    from ..evaluation.compare import AMBIGUOUS_MARGIN, MAPS

    runs = s["runs"]
    names = [c["class"] for c in s["classes"]]
    lead = (
        f'<p class="lead">The same held-out photos of a class, seen by {len(runs)} runs through their own backbones: '
        "each run's part map and the heatmap of each prototype, with its mean contribution to the class's logit and its "
        "share of the evidence. Prototypes are matched across runs one to one (Hungarian assignment) by the correlation "
        f"of their {html.escape(MAPS[s['maps']])}, upsampled to one grid, over all photos' positions. The agreement is "
        "the mean matched correlation (1 = the runs point at the same parts); a match whose r beats the next candidate "
        f"by less than {AMBIGUOUS_MARGIN} is marked ambiguous.</p>"
    )
    summary = cards(
        [
            ("agreement", f"{s['agreement']:.3f}", "mean matched correlation over classes"),
            *((r["name"], f"k = {r['k']}", f"{r['backbone']} · {r['strategy']}") for r in runs),
        ]
    )
    chart = ""
    if len(names) > 1:
        fig = charts.class_bars(names, [c["agreement"] for c in s["classes"]], decimals=2)
        chart = page.figure(fig, "Agreement per class", yaxis={"range": [min(0.0, *(c["agreement"] for c in s["classes"])), 1.05]})
    parts = []
    for entry in s["classes"]:
        low = min(entry["per_photo"]) if entry["per_photo"] else float("nan")
        matches = table(
            ["runs", "matched prototypes (r)", "agreement"],
            [
                [
                    f"{html.escape(p['a'])} ↔ {html.escape(p['b'])}",
                    ", ".join(
                        f"P{i}↔P{j} ({r:+.2f}{', ambiguous' if m < AMBIGUOUS_MARGIN else ''})"
                        for (i, j, r), m in zip(p["matches"], p["margins"])
                    )
                    + "".join(f"; {html.escape(p['a'])} P{i} unmatched" for i in p["unmatched_a"])
                    + "".join(f"; {html.escape(p['b'])} P{j} unmatched" for j in p["unmatched_b"]),
                    p["agreement"],
                ]
                for p in entry["pairs"]
            ],
            text=(0, 1),
        )
        contributions = table(
            ["run", "prototype", "mean contribution", "share of the evidence"],
            [
                [html.escape(r["name"]), f"P{i + 1}", c, percent(sh)]
                for r in entry["runs"]
                for i, (c, sh) in enumerate(zip(r["mean_contribution"], r["share"]))
            ],
            text=(0,),
        )
        gallery = ""
        if "gallery" in entry:
            g = entry["gallery"]
            key, rows = g["key"], ""
            for run, columns in enumerate(g["columns"]):
                cells = "".join(
                    f"<td>{img(images, f'{key}.run{run}.p{i - 1}', f'P{i}')}<br>{_match_caption(entry, run, col, i)}</td>"
                    if i is not None
                    else "<td></td>"
                    for col, i in enumerate(columns)
                )
                rows += (
                    f"<tr><td>{img(images, f'{key}.run{run}.part', 'part map')}<br>"
                    f"{html.escape(entry['runs'][run]['name'])}<br>part map</td>{cells}</tr>"
                )
            gallery = (
                f"<p class='muted'>Photo {g['photo'] + 1} of {len(entry['photos'])} "
                f"({html.escape(entry['photos'][g['photo']])}), where the runs agree least "
                f"(r = {entry['per_photo'][g['photo']]:.2f}); columns line up with the first run's prototypes.</p>"
                f'<table class="gallery">{rows}</table>'
            )
        parts.append(
            f"<h3>{html.escape(entry['class'])}</h3>"
            + cards(
                [
                    ("agreement", f"{entry['agreement']:.3f}", f"{len(entry['photos'])} held-out photos"),
                    ("least agreeing photo", f"{low:.3f}", "mean matched r on that photo alone"),
                ]
            )
            + matches
            + gallery
            + "<p class='muted'>Contributions (mean over the photos)</p>"
            + contributions
        )
    skipped = "".join(
        f"<p class='muted'>{html.escape(c)}: not compared ({html.escape(r)})</p>" for c, r in s.get("skipped", {}).items()
    )
    return lead + summary + chart + "".join(parts) + skipped
