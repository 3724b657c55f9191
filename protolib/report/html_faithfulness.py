"""The report's sections on faithfulness and intervention, as HTML: deletion / insertion against Grad-CAM,
the Table-4 oracle with prototype importance, and the mistakes with their culprits (Table 4 both ways)."""

from __future__ import annotations

import html

from .. import charts
from ..charts import percent
from .markup import Page, img, table


def _interval(v: dict) -> str:
    return f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"


def deletion_insertion(s: dict, page: Page, images: dict) -> str:
    figs = []
    for kind, good in (("deletion", "lower is better"), ("insertion", "higher is better")):
        fig = charts.saliency_curves(s["fractions"], s["methods"], kind)
        figs.append(page.figure(fig, f"{kind.capitalize()} ({good})"))
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
        f"<tr><td>{img(images, r['key'] + '.image', r['class'])}<br>{html.escape(r['class'])}</td>"
        f"<td>{img(images, r['key'] + '.prototype', 'prototype')}<br>prototype {r['prototype']}</td>"
        f"<td>{img(images, r['key'] + '.gradcam', 'Grad-CAM')}<br>Grad-CAM</td></tr>"
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
        + table(
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
    oracle = {key: s[key]["oracle"] for key, _ in scopes}
    fig = charts.oracle_bars(
        [label for _, label in scopes],
        [oracle[key]["top1_before"] for key, _ in scopes],
        [oracle[key]["top1_after"] for key, _ in scopes],
    )
    importance = s["run_classes"]["importance"]
    heat = charts.importance_heatmap(importance)
    rows = [
        [label, percent(oracle[key]["top1_before"]), percent(oracle[key]["top1_after"]), oracle[key]["intervened_images"]]
        for key, label in scopes
    ]
    return (
        '<p class="lead">Because every logit is a sum of prototype contributions, a prototype can be switched off '
        "without rerunning the model. The oracle of the paper's Table 4 zeroes, in every wrong prediction, the most "
        "important prototype of the predicted class, for that image only: an upper bound on what a person correcting "
        "the model could fix. It is shown over the model's whole label space (wrong predictions mostly go to classes "
        "that were not decomposed, which the oracle cannot touch) and as a classifier of the run's classes only.</p>"
        + '<div class="row"><div>'
        + page.figure(fig, "Top-1 before and with the oracle")
        + "</div><div>"
        + page.figure(
            heat,
            "Importance: top-1 drop when one prototype is off (run's classes)",
            height=max(300, 60 + 28 * len(importance)),
            margin={"l": 140, "r": 20, "t": 50, "b": 40},
        )
        + "</div></div>"
        + table(["label space", "top-1 before", "top-1 with oracle", "images intervened on"], rows)
    )


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
            percent(v["oracle_paper"]["top1_before"]),
            percent(v["oracle_paper"]["top1_after"]),
            percent(v["oracle_smallest"]["top1_after_one_switch"]),
            percent(v["oracle_smallest"]["top1_after"]),
        ]
        for v in spaces
    ]
    edits = [
        [
            html.escape(v["label_space"]),
            len(v["harmful_edit"]["switched_off"]),
            f"{v['harmful_edit']['chosen_on']['photos']} (half 0)",
            f"{v['harmful_edit']['scored_on']['photos']} (half 1)",
            percent(v["harmful_edit"]["top1_before"]),
            percent(v["harmful_edit"]["top1_after"]),
        ]
        for v in spaces
    ]
    return (
        '<p class="lead">For every held-out mistake, the smallest edit that puts the true class on top: one prototype '
        "of a class ranked above it switched off, else two. The paper's oracle (Table 4) switches off the predicted "
        "class's largest prototype; the smallest-culprit rule uses what the search found. A competitor that was not "
        "decomposed has no prototype to switch off. The global edit switches off the prototypes that do more harm than "
        "good, chosen on half 0 of the photos and scored on half 1.</p>"
        + table(
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
        + table(
            ["label space", "prototypes switched off", "chosen on", "scored on", "top-1 before", "top-1 after"],
            edits,
            text=(0, 2, 3),
        )
    )
