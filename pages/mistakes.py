"""Mistakes: the held-out mistakes one prototype switch fixes (the paper's Figure 9, found rather than hunted
for), each opened in Intervene with the edit applied; the mistakes no single switch explains, counted; the
prototypes that do more harm than good, with a global edit chosen on one half of the photos and scored on the
other; the paper's oracle both ways; and the story page to hand over. protolib computes, this page draws."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from pages.common import cache, jobs, navigation
from pages.common.edits import reset_all, set_scales
from pages.common.figures import md
from pages.common.heldout import held_out_controls, held_out_features
from pages.common.mistake_views import (
    cards,
    culprit_overlay,
    culprit_title,
    harmful_rows,
    intervene_keys,
    table4_rows,
    top_rows,
    unexplained,
)
from pages.common.pickers import SOURCE_DATA
from pages.common.run_context import Context, require_run
from pages.common.sidebar import select_run_path
from pages.common.state import workspace
from protolib import config
from protolib.backbones import BackboneError
from protolib.data import BadImage, DataError
from protolib.evaluation.mistakes import find_culprits, mistakes_json
from protolib.mistake_demo import RUN_NAME as PROBE_RUN
from protolib.mistake_demo import build_probe_demo
from protolib.report.story import render_story, story_figures
from protolib.runs import RunError

SHOWN = 6  # cards drawn at first


def open_in_intervene(ctx: Context, card, split: str) -> None:
    """Intervene on the card's photo with only the culprit switched off (the session's other edits reset)."""
    reset_all(ctx)
    set_scales(ctx, [(ctx.decomposed.index(card.culprit[0]), card.culprit[1])], 0.0)
    st.session_state.update(intervene_keys(card, split, ctx.decomposed, SOURCE_DATA))
    st.switch_page(navigation.INTERVENE)


def card_view(ctx: Context, card, n: int, split: str) -> None:
    label, i = card.culprit
    title = culprit_title(ctx.run, ctx.head, label, i)
    with st.container(border=True):
        try:
            feats, shown = cache.image_features(cache.backbone_key(ctx.backbone), card.path, card.file, ctx.backbone)
        except (BadImage, OSError) as exc:
            st.error(str(exc))
            return
        photo_col, map_col = st.columns(2)
        photo_col.image(shown, width="stretch")
        map_col.image(culprit_overlay(ctx.head, feats, shown, label, i), width="stretch")
        st.markdown(
            f"<b>{md(ctx.backbone.class_names[card.label])}</b> taken for <b>{md(ctx.backbone.class_names[card.predicted])}</b>. "
            f"Switch off <b>{md(ctx.backbone.class_names[label])} · {md(title)}</b> (right) and it is right, "
            f"by {card.margin:.2f}.<br><small>{md(card.file)}</small>",
            unsafe_allow_html=True,
        )
        st.markdown(
            top_table(
                top_rows(ctx.backbone.class_names, card.top_before, card.label),
                top_rows(ctx.backbone.class_names, card.top_after, card.label),
            ),
            unsafe_allow_html=True,
        )
        if st.button("Open in Intervene", key=f"mistake_open.{n}", icon=":material/tune:"):
            open_in_intervene(ctx, card, split)


def top_table(before: list[dict], after: list[dict]) -> str:
    """Top-5 before and after side by side, as a small HTML table (names escaped)."""
    rows = "".join(
        f"<tr><td>{md(b['class'])}</td><td>{b['logit']:.2f}</td><td>{md(a['class'])}</td><td>{a['logit']:.2f}</td></tr>"
        for b, a in zip(before, after)
    )
    return (
        "<table style='font-size:0.8rem;width:100%'><tr><th>before</th><th>logit</th><th>after</th><th>logit</th>"
        f"</tr>{rows}</table>"
    )


def probe_demo_offer(figures: dict) -> None:
    """When no mistake of this run is one switch away because its competitors were not decomposed."""
    st.info(
        f"None of the {figures['mistakes']} mistakes is fixed by switching prototypes off: in "
        f"{figures['not_decomposed']} of them a class above the true one was not decomposed (it keeps its own row, "
        "which no switch lowers). The paper decomposes every class of its model. The sample photos' linear probe "
        "is such a model: EfficientNet-Lite0's features, a 10-way head fit on 20 photos per class, every class "
        "decomposed (k = 3). It is built once and shared.",
        icon=":material/info:",
    )
    if figures.get("run_classes"):
        r = figures["run_classes"]
        st.caption(
            f"Read as a classifier of {r['label_space']} only: {r['mistakes']} mistakes, {r['fixed_by_one']} "
            f"fixed by one switch, {r['fixed_by_two']} by two (Table 4 below)."
        )
    if st.button("Open the mistakes demo (the sample photos' probe)", icon=":material/rocket_launch:", key="probe_demo"):
        with st.status("Preparing the mistakes demo…", expanded=True) as status:
            started = time.perf_counter()
            bar = st.progress(0.0, text="waiting")

            def progress(stage, done, total):
                bar.progress(min(done / max(total, 1), 1.0), text=f"{stage}: {done}/{total}")

            try:
                with jobs.queued("mistakes demo"):
                    backbone = cache.get_backbone("efficientnet_lite0", None, st.session_state.get("device") or "cpu")
                    path = build_probe_demo(workspace().runs_root, backbone, progress)
            except (DataError, BackboneError, RunError, ValueError, OSError) as exc:
                status.update(label="The demo could not be built", state="error")
                st.error(workspace().redact(str(exc)))
                return
            status.update(label=f"Ready in {time.perf_counter() - started:.0f} s", state="complete")
        select_run_path(path)
        st.session_state["data_dir"] = str(config.SAMPLE_DATA)
        st.rerun()


def harmful_section(figures: dict) -> None:
    edit = figures["harmful_edit"]
    st.markdown("##### Prototypes that do more harm than good")
    st.caption(
        f"Each prototype switched off alone, over these {figures['photos']} held-out photos: the predictions "
        "it fixes and breaks. Only prototypes that change a prediction are listed."
    )
    rows = harmful_rows(figures)
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    half0, half1, n_col = st.columns(3)
    half0.metric(
        "Chosen on half 0",
        f"{100 * edit['chosen_on']['top1_after']:.1f} %",
        delta=f"{100 * (edit['chosen_on']['top1_after'] - edit['chosen_on']['top1_before']):+.1f} pts (in-sample)",
        help=f"{edit['chosen_on']['photos']} photos: where the edit was chosen.",
    )
    half1.metric(
        "Scored on half 1 (held out)",
        f"{100 * edit['top1_after']:.1f} %",
        delta=f"{100 * (edit['top1_after'] - edit['top1_before']):+.1f} pts",
        help=f"{edit['scored_on']['photos']} photos that played no part in choosing it.",
    )
    n_col.metric("Prototypes switched off", len(edit["switched_off"]))
    off = ", ".join(f"{s['class']} P{s['prototype'] + 1}" for s in edit["switched_off"]) or "none"
    st.caption(md(f"The global edit switches off: {off}. Half 0 chose it, half 1 scored it. {edit['rule']}."))


def story_button(ctx: Context, data: str, split: str) -> None:
    def make() -> bytes:
        story = story_figures(ctx.run, ctx.backbone, data, split)
        return render_story(story).encode()

    st.download_button(
        "Write the story (one offline HTML page)",
        data=make,
        file_name=f"{ctx.name}-story.html",
        mime="text/html",
        icon=":material/auto_stories:",
        on_click="ignore",
        help="The model and its exactness, a few classes' prototypes, the fixed mistakes and the "
        "harmful prototypes: one page that opens offline, to hand to someone who will not open the app.",
    )


# -- the page --------------------------------------------------------------------------------------
navigation.entry()
st.title("Mistakes")
st.caption(
    "Which of the model's mistakes does a part explain? For every held-out photo it gets wrong, the smallest "
    "edit that puts the true class on top: one prototype switched off, else two. No backbone pass: "
    "every logit is a sum of prototype contributions."
)
ctx = require_run()
if ctx.run.path is not None and ctx.run.path.name == PROBE_RUN:
    st.info(
        "This is the mistakes demo: the sample photos' linear probe (EfficientNet-Lite0's features, a 10-way "
        "head fit on 20 photos per class), every class decomposed with k = 3. The 1000-way demo's mistakes all "
        "go to classes it did not decompose, which no switch can lower.",
        icon=":material/info:",
    )
held_out = held_out_controls(ctx)
sf = held_out_features(ctx, held_out, compute=False)
if sf is None:
    if st.button("Compute held-out features", icon=":material/dataset:"):
        sf = held_out_features(ctx, held_out, compute=True)
    if sf is None:
        st.stop()
head, labels = ctx.head, ctx.backbone.class_names
found = find_culprits(head, sf.pooled, sf.labels)
figures = mistakes_json(head, sf.pooled, sf.labels, sf.paths, labels, ctx.class_names)
counts = st.columns(4)
counts[0].metric("Mistakes", f"{figures['mistakes']} / {figures['photos']}")
counts[1].metric("Fixed by one switch", figures["fixed_by_one"])
counts[2].metric("Fixed by two", figures["fixed_by_two"])
counts[3].metric("Not fixed by one or two", figures["not_decomposed"] + figures["not_fixed_by_two"])
st.caption(" · ".join(f"{why}: {n}" for why, n in unexplained(found).items()))
gallery = cards(found, sf.paths)
if not gallery and figures["not_decomposed"]:
    probe_demo_offer(figures)
if gallery:
    st.markdown("##### Mistakes one switch fixes, the clearest first")
    shown = st.slider("Cards", 1, len(gallery), min(SHOWN, len(gallery))) if len(gallery) > 1 else 1
    columns = st.columns(3)
    for n, card in enumerate(gallery[:shown]):
        with columns[n % 3]:
            card_view(ctx, card, n, held_out.split)
st.markdown("##### The oracle two ways (the paper's Table 4)")
st.caption(
    "The paper's rule switches off the predicted class's largest prototype in every mistake; the smallest-"
    "culprit rule uses the switches found here."
)
percent = st.column_config.NumberColumn(format="percent")
st.dataframe(
    pd.DataFrame(table4_rows(figures)),
    hide_index=True,
    width="stretch",
    column_config={
        c: percent for c in ("top-1", "oracle (paper's rule)", "smallest culprit, one switch", "smallest culprit, one or two")
    },
)
harmful_section(figures)
story_button(ctx, held_out.data, held_out.split)
