"""The report's sections on the method itself, as HTML: exactness, Table 3 and Figure 5 against k, refinement
fidelity with example heatmaps, stability across NMF seeds, ProtoEval, and the explainability axioms.
Each takes its section's figures, the page (which embeds the charts) and the pictures."""

from __future__ import annotations

import html

from .. import charts
from ..charts import percent
from ..charts.evaluation import HEAD_ROWS
from .markup import Page, cards, img, table


def exactness(s: dict, page: Page, images: dict) -> str:
    ok = s["max_abs_logit_diff"] <= 1e-4
    return (
        '<p class="lead">The prototype network replaces the model\'s head by a sum of prototype contributions. '
        "Its logits should equal the original model's to float precision, so its accuracy is unchanged.</p>"
        + cards(
            [
                ("max |logit difference|", f"{s['max_abs_logit_diff']:.1e}", "≤ 1e-4 expected" + (" ✓" if ok else " ✗")),
                ("top-1, original model", percent(s["top1_original"]), f"{s['n_images']} held-out images"),
                ("top-1, prototype network", percent(s["top1_prototype"]), f"{s['n_classes_decomposed']} classes decomposed"),
            ]
        )
    )


def table3(s: dict, page: Page, images: dict) -> str:
    names = tuple(HEAD_ROWS.items())
    among = s["among_run_classes"]
    bars = charts.table3_by_k(s["k"], among)
    lines = charts.errors_against_k(
        {
            "k": s["k"],
            "feature reconstruction error": s["feature_reconstruction_error"],
            "head reconstruction error": s["head_reconstruction_error"],
        }
    )
    every = s["every_class_decomposed"]
    rows = [
        [
            k,
            *(percent(among[key][j]) for key, _ in names),
            *(percent(s["all_classes"][key][j]) for key, _ in names[:2]),
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
        + page.figure(bars, "Top-1 among the run's classes, head rows replaced, by k")
        + "</div><div>"
        + page.figure(lines, "Reconstruction errors against k")
        + "</div></div>"
        + table(
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
    fig = charts.fidelity_bars([{"strategy": k, "mean": s["mean"][k], "worst prototype": s["min"][k]} for k in strategies])
    flips = table(
        ["strategy", "mean", "worst prototype", "flips (fidelity < 0)"],
        [[k, s["mean"][k], s["min"][k], s["flips"][k]] for k in strategies],
    )
    classes = list(next(iter(s["per_class"].values()), {}))
    per_class = table(["class", *strategies], [[html.escape(c), *[s["per_class"][k][c] for k in strategies]] for c in classes])
    gallery = ""
    for ex in s["examples"]:
        k = len(ex["alpha"])
        head = "<tr><td></td>" + "".join(f"<td>prototype {i + 1} (α = {a:+.2f})</td>" for i, a in enumerate(ex["alpha"])) + "</tr>"
        before = (
            f"<tr><td>{img(images, ex['key'] + '.image', ex['class'])}<br>{html.escape(ex['class'])}</td>"
            + "".join(f"<td>{img(images, ex['key'] + f'.before{i}', 'before')}<br>NMF p{i + 1}</td>" for i in range(k))
            + "</tr>"
        )
        after = (
            "<tr><td class='muted'>after refinement →</td>"
            + "".join(
                f"<td>{img(images, ex['key'] + f'.after{i}', 'after')}<br>"
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
        + page.figure(fig, "Signed heatmap fidelity per refinement strategy")
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
    fig = charts.class_bars(names, [s["per_class"][n] for n in names])
    return (
        f'<p class="lead">NMF was run again with seeds {", ".join(map(str, s["seeds"][1:]))} on the same training features; '
        "each new prototype is matched to one of the run's (Hungarian assignment on cosine similarity). A mean matched "
        "similarity near 1 means the prototypes do not depend on the random start.</p>"
        + cards(
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
    fig = charts.protoeval_bars(s["scores"])
    return (
        lead
        + cards([("images", str(s["n_images"]), f"{s['n_classes']} classes"), ("keypoints from", "", s["source"])])
        + page.figure(fig, "Consistency and stability (%)")
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
        + table(["axiom", "max error", "", "what is checked"], rows, text=(3,))
    )
