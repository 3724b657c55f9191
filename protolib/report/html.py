"""The report as one self-contained HTML page: plotly.js inlined once (it works offline), figures as
plotly divs, heatmap examples as inline PNGs, and a short sentence per section saying what it shows."""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from .sections import OPTIONAL_SECTIONS, SECTIONS, Report

COLOURS = {
    "prototypes only": "#e9c46a",
    "residual only": "#8ab17d",
    "both": "#0f6e8c",
    "refined heatmap": "#0f6e8c",
    "NMF part map": "#e9c46a",
    "random": "#9aa5b1",
    "Grad-CAM": "#e76f51",
    "nmf": "#e9c46a",
    "refined": "#0f6e8c",
    "optimized": "#0f6e8c",
    "paper": "#e76f51",
    "uniform": "#e9c46a",
    "proportional": "#8ab17d",
}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2733;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:8px 0 4px} h2{font-size:20px;margin:0 0 6px;color:#0f4c5c}
section{background:#fff;border:1px solid #e2e6ea;border-radius:10px;padding:18px 22px;margin:18px 0}
p.lead{margin:4px 0 12px;color:#44515e;line-height:1.45} .muted{color:#6b7885;font-size:13px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0 12px}
.card{border:1px solid #e2e6ea;border-radius:8px;padding:8px 14px;min-width:150px}
.card b{display:block;font-size:20px;margin-top:2px} .card span{font-size:12px;color:#6b7885}
table{border-collapse:collapse;margin:8px 0 12px;font-size:13.5px}
th,td{border-bottom:1px solid #e8ebee;padding:4px 10px;text-align:right} th{background:#f1f4f6}
td:first-child,th:first-child,td.text,th.text{text-align:left}
.pass{color:#1b7f3b;font-weight:600} .fail{color:#b3261e;font-weight:600}
.gallery td{padding:2px;text-align:center;font-size:12px} .gallery img{width:112px;height:112px;border-radius:4px}
.row{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:12px}  /* fixed columns: plots size once */
nav a{margin-right:12px;font-size:13px;color:#0f6e8c}
.unavailable{background:#fff6e5;border-left:4px solid #e9a23b;padding:8px 12px}
"""


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return html.escape(str(value))


def _labels(names) -> list[str]:
    """Class names as plotly labels: plotly draws <a href>, <b> and <br> in them, so a name is escaped to text."""
    return [html.escape(str(n)) for n in names]


def _table(header: list[str], rows: list[list], cls: str = "", text: tuple[int, ...] = ()) -> str:
    """Numbers right-aligned; the columns in ``text`` (indices) left-aligned, as prose reads."""

    def td(j, c):
        return f'<td class="{"text" if j in text else ""}">{c if isinstance(c, str) else _fmt(c)}</td>'

    head = "".join(f'<th class="{"text" if j in text else ""}">{html.escape(h)}</th>' for j, h in enumerate(header))
    body = "".join("<tr>" + "".join(td(j, c) for j, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cards(items: list[tuple[str, str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><span>{html.escape(a)}</span><b>{html.escape(b)}</b><span>{html.escape(c)}</span></div>'
            for a, b, c in items
        )
        + "</div>"
    )


class Page:
    """Collects the figures so that each gets a unique id and the page can count them."""

    def __init__(self):
        self.figures = 0

    def figure(self, fig: go.Figure, title: str, height: int = 340, **layout) -> str:
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


def _img(images: dict, key: str, alt: str) -> str:
    data = images.get(key)
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">' if data else ""


def _unavailable(section: dict) -> str:
    return f'<p class="unavailable">Not computed: {html.escape(section.get("reason", "unknown reason"))}</p>'


# -- one function per section ----------------------------------------------------------------------
def exactness(s: dict, page: Page, images: dict) -> str:
    ok = s["max_abs_logit_diff"] <= 1e-4
    return (
        '<p class="lead">The prototype network replaces the model\'s head by a sum of prototype contributions. '
        "Its logits should equal the original model's to float precision, so its accuracy is unchanged.</p>"
        + _cards(
            [
                ("max |logit difference|", f"{s['max_abs_logit_diff']:.1e}", "≤ 1e-4 expected" + (" ✓" if ok else " ✗")),
                ("top-1, original model", _pct(s["top1_original"]), f"{s['n_images']} held-out images"),
                ("top-1, prototype network", _pct(s["top1_prototype"]), f"{s['n_classes_decomposed']} classes decomposed"),
            ]
        )
    )


def table3(s: dict, page: Page, images: dict) -> str:
    ks = [str(k) for k in s["k"]]
    names = (("prototypes_only", "prototypes only"), ("residual_only", "residual only"), ("both", "both"))
    among = s["among_run_classes"]
    bars = go.Figure(
        [
            go.Bar(x=ks, y=among[key], name=name, marker_color=COLOURS[name], text=[_pct(v) for v in among[key]])
            for key, name in names
        ]
    )
    lines = go.Figure(
        [
            go.Scatter(x=s["k"], y=s[key], name=name, mode="lines+markers", line={"color": colour})
            for key, name, colour in (
                ("feature_reconstruction_error", "feature error ‖A − EP‖/‖A‖", "#0f6e8c"),
                ("head_reconstruction_error", "head error ‖v − Σαp‖/‖v‖", "#e76f51"),
            )
        ]
    )
    every = s["every_class_decomposed"]
    rows = [
        [
            k,
            *(_pct(among[key][j]) for key, _ in names),
            *(_pct(s["all_classes"][key][j]) for key, _ in names[:2]),
            s["feature_reconstruction_error"][j],
            s["head_reconstruction_error"][j],
        ]
        for j, k in enumerate(s["k"])
    ]
    setting = (
        "Every class of the model is decomposed: this is the paper's setting."
        if every
        else f"The run decomposes {s['n_classes']} of the model's {s['n_model_classes']} classes. "
        "The chart reads the run as a classifier of its own classes (its images, its rows). The last columns keep "
        "the model's whole label space, where only the run's rows are replaced and every other class keeps its "
        "whole row: there, 'residual only' says little about the method."
    )
    note = f'<p class="muted">{html.escape(s["note"])}</p>' if s.get("note") else ""
    return (
        '<p class="lead">Each class vector is split into its NMF prototypes (scaled by α) and a residual. How much of '
        "the accuracy do the prototypes alone carry, and how much the residual? As k grows, the prototypes explain more "
        "of the features and of the head (the paper's Table 3 and Figure 5), decomposed on the run's own training images. "
        f"{html.escape(setting)}</p>"
        + '<div class="row"><div>'
        + page.figure(
            bars,
            "Top-1 among the run's classes, head rows replaced, by k",
            barmode="group",
            yaxis={"tickformat": ".0%", "range": [0, 1.08]},
            xaxis={"title": "k", "type": "category"},
        )
        + "</div><div>"
        + page.figure(
            lines,
            "Reconstruction errors against k",
            xaxis={"title": "k", "dtick": 1},
            yaxis={"title": "relative error", "rangemode": "tozero"},
        )
        + "</div></div>"
        + _table(
            [
                "k",
                "prototypes only",
                "residual only",
                "both",
                f"prototypes only ({s['n_model_classes']}-way)",
                f"residual only ({s['n_model_classes']}-way)",
                "feature error",
                "head error",
            ],
            rows,
        )
        + note
    )


def refinement(s: dict, page: Page, images: dict) -> str:
    strategies = list(s["mean"])
    fig = go.Figure(
        [
            go.Bar(
                x=strategies,
                y=[s["mean"][k] for k in strategies],
                name="mean over prototypes",
                marker_color=[COLOURS.get(k, "#888") for k in strategies],
                text=[f"{s['mean'][k]:.3f}" for k in strategies],
            ),
            go.Scatter(
                x=strategies,
                y=[s["min"][k] for k in strategies],
                mode="markers",
                name="worst prototype",
                marker={"symbol": "line-ew-open", "size": 30, "line": {"width": 3, "color": "#1d3557"}},
            ),
        ]
    )
    flips = _table(
        ["strategy", "mean", "worst prototype", "flips (fidelity < 0)"],
        [[k, s["mean"][k], s["min"][k], s["flips"][k]] for k in strategies],
    )
    classes = list(next(iter(s["per_class"].values()), {}))
    per_class = _table(["class", *strategies], [[html.escape(c), *[s["per_class"][k][c] for k in strategies]] for c in classes])
    gallery = ""
    for ex in s["examples"]:
        k = len(ex["alpha"])
        head = "<tr><td></td>" + "".join(f"<td>prototype {i + 1} (α = {a:+.2f})</td>" for i, a in enumerate(ex["alpha"])) + "</tr>"
        before = (
            f"<tr><td>{_img(images, ex['key'] + '.image', ex['class'])}<br>{html.escape(ex['class'])}</td>"
            + "".join(f"<td>{_img(images, ex['key'] + f'.before{i}', 'before')}<br>NMF p{i + 1}</td>" for i in range(k))
            + "</tr>"
        )
        after = (
            "<tr><td class='muted'>after refinement →</td>"
            + "".join(
                f"<td>{_img(images, ex['key'] + f'.after{i}', 'after')}<br>"
                f"refined p̃{i + 1} · r = {ex['heatmap_correlation'][i]:+.2f}</td>"
                for i in range(k)
            )
            + "</tr>"
        )
        gallery += f'<table class="gallery">{head}{before}{after}</table>'
    return (
        '<p class="lead">Refinement hands the residual to the prototypes so that they sum to the class vector exactly. '
        "It should not change what each prototype points at: signed heatmap fidelity is the Pearson correlation between "
        "the heatmap of the scaled part α·p and that of the refined prototype p̃, on held-out images (1 = unchanged). "
        "Below 0 the prototype has <b>flipped</b>: it would be shown as raising the logit where its part lowers it. "
        f"The run uses <b>{html.escape(s['strategy'])}</b>.</p>"
        + '<div class="row"><div>'
        + page.figure(
            fig, "Signed heatmap fidelity per refinement strategy", yaxis={"range": [min(0.0, *s["min"].values()) - 0.05, 1.08]}
        )
        + "</div><div>"
        + flips
        + "<p class='muted'>Mean fidelity per class</p>"
        + per_class
        + "</div></div>"
        + "<p class='muted'>Examples: each prototype's heatmap before (the scaled NMF part α·p) and after refinement "
        "(the run's strategy); r is their correlation on this image.</p>" + gallery
    )


def seed_stability(s: dict, page: Page, images: dict) -> str:
    names = list(s["per_class"])
    fig = go.Figure(
        go.Bar(
            x=_labels(names),
            y=[s["per_class"][n] for n in names],
            marker_color="#0f6e8c",
            text=[f"{s['per_class'][n]:.3f}" for n in names],
        )
    )
    return (
        f'<p class="lead">NMF was run again with seeds {", ".join(map(str, s["seeds"][1:]))} on the same training features; '
        "each new prototype is matched to one of the run's (Hungarian assignment on cosine similarity). A mean matched "
        "similarity near 1 means the prototypes do not depend on the random start.</p>"
        + _cards(
            [
                ("mean matched cosine similarity", f"{s['mean']:.3f}", "over classes"),
                ("least stable class", f"{s['min']:.3f}", min(s["per_class"], key=s["per_class"].get)),
            ]
        )
        + page.figure(fig, "Mean matched similarity per class", yaxis={"range": [0, 1.05]})
    )


def protoeval(s: dict, page: Page, images: dict) -> str:
    lead = (
        '<p class="lead">ProtoEval (Huang et al. 2023): a prototype is <i>consistent</i> if the box around its '
        "strongest activation covers the same annotated part in ≥ 80% of its class's images; <i>stability</i> is "
        "the share of images whose covered parts do not change under small noise.</p>"
    )
    methods = list(s["scores"])
    maps = list(s["scores"][methods[0]])
    labels = [f"{m} · {kind}" for m in methods for kind in maps]
    fig = go.Figure(
        [
            go.Bar(
                x=labels,
                y=[s["scores"][m][kind][metric] for m in methods for kind in maps],
                name=metric,
                text=[f"{s['scores'][m][kind][metric]:.1f}" for m in methods for kind in maps],
                marker_color=colour,
            )
            for metric, colour in (("consistency", "#0f6e8c"), ("stability", "#e9c46a"))
        ]
    )
    return (
        lead
        + _cards([("images", str(s["n_images"]), f"{s['n_classes']} classes"), ("keypoints from", "", s["source"])])
        + page.figure(fig, "Consistency and stability (%)", barmode="group", yaxis={"range": [0, 105]})
    )


def axioms(s: dict, page: Page, images: dict) -> str:
    rows = [
        [
            name,
            f"{s[name]['max_error']:.2e}",
            f'<span class="{"pass" if s[name]["passed"] else "fail"}">{"pass" if s[name]["passed"] else "FAIL"}</span>',
            html.escape(s[name]["meaning"]),
        ]
        for name in ("completeness", "linearity", "sensitivity", "null_prototype", "symmetry")
    ]
    return (
        '<p class="lead">Sanity checks, not evidence: for a linear head, completeness, linearity, sensitivity and '
        "symmetry hold by construction, so these rows only confirm that the implementation is what the maths says "
        f"(the paper's axioms, verified numerically on the {s['n_images']} held-out images; each error is the largest over "
        f"all images, classes and prototypes, against a tolerance of {s['tolerance']:.0e}). The evidence that the "
        "prototypes mean something is in the fidelity, ProtoEval and deletion/insertion sections.</p>"
        + _table(["axiom", "max error", "", "what is checked"], rows, text=(3,))
    )


def _interval(v: dict) -> str:
    return f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"


def deletion_insertion(s: dict, page: Page, images: dict) -> str:
    figs = []
    for kind, good in (("deletion", "lower is better"), ("insertion", "higher is better")):
        fig = go.Figure(
            [
                go.Scatter(
                    x=s["fractions"],
                    y=v[f"{kind}_curve"],
                    mode="lines+markers",
                    line={"color": COLOURS.get(m, "#888")},
                    name=f"{m} (AUC {v[f'{kind}_auc']['mean']:.3f})",
                )
                for m, v in s["methods"].items()
            ]
        )
        figs.append(
            page.figure(
                fig,
                f"{kind.capitalize()} ({good})",
                xaxis={"title": "fraction of pixels", "tickformat": ".0%"},
                yaxis={"title": "class probability", "range": [0, 1.02]},
            )
        )
    rows = [
        [
            m,
            _interval(v["deletion_auc"]),
            _interval(v["insertion_auc"]),
            _interval(v["minus_gradcam"]["deletion"]) if "minus_gradcam" in v else "",
            _interval(v["minus_gradcam"]["insertion"]) if "minus_gradcam" in v else "",
        ]
        for m, v in s["methods"].items()
    ]
    gallery = "".join(
        f"<tr><td>{_img(images, r['key'] + '.image', r['class'])}<br>{html.escape(r['class'])}</td>"
        f"<td>{_img(images, r['key'] + '.prototype', 'prototype')}<br>prototype {r['prototype']}</td>"
        f"<td>{_img(images, r['key'] + '.gradcam', 'Grad-CAM')}<br>Grad-CAM</td></tr>"
        for r in s["per_image"]
        if "key" in r
    )
    return (
        '<p class="lead">Pixels are removed (deletion: replaced by the mean colour) or restored onto a blurred copy '
        "(insertion) in the order a saliency map ranks them, and the model's probability of the true class is tracked "
        "(Petsiuk et al. 2018). A faithful map makes the probability fall fast when deleting and rise fast when inserting. "
        f"Compared on the same {s['n_images']} held-out images: the heatmap of each image's most contributing refined "
        "prototype, the NMF part map of the same prototype, Grad-CAM (for this head, the sum of all prototype heatmaps, "
        "clipped at 0) and a random map. Means with 95 % intervals; the last columns are paired differences against "
        "Grad-CAM: an interval that contains 0 is a tie.</p>"
        + '<div class="row"><div>'
        + figs[0]
        + "</div><div>"
        + figs[1]
        + "</div></div>"
        + _table(
            ["saliency", "deletion AUC ↓", "insertion AUC ↑", "deletion − Grad-CAM", "insertion − Grad-CAM"],
            rows,
            text=(1, 2, 3, 4),
        )
        + (f'<table class="gallery">{gallery}</table>' if gallery else "")
    )


def intervention(s: dict, page: Page, images: dict) -> str:
    scopes = (
        ("all_classes", f"all {s['n_classes_all']} classes of the model"),
        ("run_classes", f"the run's {s['n_classes_run']} classes"),
    )
    fig = go.Figure(
        [
            go.Bar(
                x=[label for _, label in scopes],
                y=[s[key]["oracle"][when] for key, _ in scopes],
                name=name,
                marker_color=colour,
                text=[_pct(s[key]["oracle"][when]) for key, _ in scopes],
            )
            for when, name, colour in (("top1_before", "before", "#b0bec5"), ("top1_after", "with the oracle", "#0f6e8c"))
        ]
    )
    importance = s["run_classes"]["importance"]
    names = list(importance)
    k = len(next(iter(importance.values())))
    heat = go.Figure(
        go.Heatmap(
            z=[[100 * v for v in importance[n]] for n in names],
            x=[f"P{i + 1}" for i in range(k)],
            y=_labels(names),
            colorscale="RdBu",
            zmid=0,
            colorbar={"title": "pts"},
            text=[[f"{100 * v:+.1f}" for v in importance[n]] for n in names],
            texttemplate="%{text}",
        )
    )
    oracle = {key: s[key]["oracle"] for key, _ in scopes}
    rows = [
        [label, _pct(oracle[key]["top1_before"]), _pct(oracle[key]["top1_after"]), oracle[key]["intervened_images"]]
        for key, label in scopes
    ]
    return (
        '<p class="lead">Because every logit is a sum of prototype contributions, a prototype can be switched off '
        "without rerunning the model. The oracle of the paper's Table 4 zeroes, in every wrong prediction, the most "
        "important prototype of the predicted class, for that image only: an upper bound on what a person correcting "
        "the model could fix. It is shown over the model's whole label space (wrong predictions mostly go to classes "
        "that were not decomposed, which the oracle cannot touch) and as a classifier of the run's classes only.</p>"
        + '<div class="row"><div>'
        + page.figure(fig, "Top-1 before and with the oracle", barmode="group", yaxis={"tickformat": ".0%", "range": [0, 1.08]})
        + "</div><div>"
        + page.figure(
            heat,
            "Importance: top-1 drop when one prototype is off (run's classes)",
            height=max(300, 60 + 28 * len(names)),
            margin={"l": 140, "r": 20, "t": 50, "b": 40},
            yaxis={"autorange": "reversed"},
        )
        + "</div></div>"
        + _table(["label space", "top-1 before", "top-1 with oracle", "images intervened on"], rows)
    )


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
    cards = _cards(
        [
            ("agreement", f"{s['agreement']:.3f}", "mean matched correlation over classes"),
            *((r["name"], f"k = {r['k']}", f"{r['backbone']} · {r['strategy']}") for r in runs),
        ]
    )
    chart = ""
    if len(names) > 1:
        fig = go.Figure(
            go.Bar(
                x=_labels(names),
                y=[c["agreement"] for c in s["classes"]],
                marker_color="#0f6e8c",
                text=[f"{c['agreement']:.2f}" for c in s["classes"]],
            )
        )
        chart = page.figure(fig, "Agreement per class", yaxis={"range": [min(0.0, *(c["agreement"] for c in s["classes"])), 1.05]})
    parts = []
    for entry in s["classes"]:
        low = min(entry["per_photo"]) if entry["per_photo"] else float("nan")
        matches = _table(
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
        contributions = _table(
            ["run", "prototype", "mean contribution", "share of the evidence"],
            [
                [html.escape(r["name"]), f"P{i + 1}", c, _pct(sh)]
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
                    f"<td>{_img(images, f'{key}.run{run}.p{i - 1}', f'P{i}')}<br>{_match_caption(entry, run, col, i)}</td>"
                    if i is not None
                    else "<td></td>"
                    for col, i in enumerate(columns)
                )
                rows += (
                    f"<tr><td>{_img(images, f'{key}.run{run}.part', 'part map')}<br>"
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
            + _cards(
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
    return lead + cards + chart + "".join(parts) + skipped


def mistakes(s: dict, page: Page, images: dict) -> str:
    """Table 4 both ways: the paper's oracle and the smallest culprit, per label space, and the split-half edit."""
    spaces = [s, *([s["run_classes"]] if "run_classes" in s else [])]
    rows = [
        [
            html.escape(v["label_space"]),
            v["mistakes"],
            v["fixed_by_one"],
            v["fixed_by_two"],
            v["not_decomposed"],
            _pct(v["oracle_paper"]["top1_before"]),
            _pct(v["oracle_paper"]["top1_after"]),
            _pct(v["oracle_smallest"]["top1_after_one_switch"]),
            _pct(v["oracle_smallest"]["top1_after"]),
        ]
        for v in spaces
    ]
    edits = [
        [
            html.escape(v["label_space"]),
            len(v["harmful_edit"]["switched_off"]),
            f"{v['harmful_edit']['chosen_on']['photos']} (half 0)",
            f"{v['harmful_edit']['scored_on']['photos']} (half 1)",
            _pct(v["harmful_edit"]["top1_before"]),
            _pct(v["harmful_edit"]["top1_after"]),
        ]
        for v in spaces
    ]
    return (
        '<p class="lead">For every held-out mistake, the smallest edit that puts the true class on top: one prototype '
        "of a class ranked above it switched off, else two. The paper's oracle (Table 4) switches off the predicted "
        "class's largest prototype; the smallest-culprit rule uses what the search found. A competitor that was not "
        "decomposed has no prototype to switch off. The global edit switches off the prototypes that do more harm than "
        "good, chosen on half 0 of the photos and scored on half 1.</p>"
        + _table(
            [
                "label space",
                "mistakes",
                "fixed by one",
                "by two",
                "competitor not decomposed",
                "top-1",
                "oracle (paper)",
                "smallest culprit (one)",
                "smallest culprit (one or two)",
            ],
            rows,
            text=(0,),
        )
        + _table(
            ["label space", "prototypes switched off", "chosen on", "scored on", "top-1 before", "top-1 after"],
            edits,
            text=(0, 2, 3),
        )
    )


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
    return "<p class='muted'>Named prototypes:</p>" + _table(["class", "prototype", "label"], rows, text=(0, 1, 2))


def render(report: Report) -> str:
    """The whole page as a string."""
    figures, page = report.figures, Page()
    run = figures["run"]
    parts = []
    sections = {**SECTIONS, **{key: title for key, title in OPTIONAL_SECTIONS.items() if key in figures}}
    for key, title in sections.items():
        section = figures.get(key) or {"available": False, "reason": "not computed"}
        body = RENDER[key](section, page, report.images) if section.get("available") else _unavailable(section)
        parts.append(f'<section id="{key}"><h2>{html.escape(title)}</h2>{body}</section>')
    nav = "".join(f'<a href="#{key}">{html.escape(title.split(" (")[0])}</a>' for key, title in sections.items())
    intervention_note = (
        f"<p class='muted'>This run carries an intervention: {html.escape(str(run['intervention']))}</p>"
        if run.get("intervention")
        else ""
    ) + _named_prototypes(run.get("prototype_labels") or {})
    summary = (
        f"<p class='muted'>{html.escape(run['backbone'])} (weights {html.escape(run['fingerprint'])}) · k = {run['k']} "
        f"prototypes per class · refinement {html.escape(run['strategy'])} · {len(run['classes'])} classes: "
        f"{html.escape(', '.join(run['classes'][:12]))}{' …' if len(run['classes']) > 12 else ''}<br>"
        f"held-out images: {run['n_images']} from {html.escape(run['data'])}/{html.escape(run['split'])} · built "
        f"{html.escape(run['created'])} in {run['seconds']['total']:.0f} s</p>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>protoscope report: {html.escape(run['backbone'])}, k = {run['k']}</title>"
        f"<style>{CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body><main>"
        f"<h1>Part-prototype evaluation report</h1>{summary}{intervention_note}<nav>{nav}</nav>"
        + "".join(parts)
        + f"<p class='muted'>{page.figures} figures · the same numbers are in the JSON file beside this page.</p>"
        + "</main></body></html>"
    )


def render_comparison(report: Report) -> str:
    """A page of the comparison section alone (``python -m protolib compare``)."""
    page = Page()
    section = report.figures["comparison"]
    body = comparison(section, page, report.images) if section.get("available") else _unavailable(section)
    runs = ", ".join(r["name"] for r in section.get("runs", []))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>protoscope comparison: {html.escape(runs)}</title>"
        f"<style>{CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body><main>"
        f"<h1>Runs side by side</h1><section id='comparison'><h2>{html.escape(OPTIONAL_SECTIONS['comparison'])}</h2>"
        f"{body}</section></main></body></html>"
    )
