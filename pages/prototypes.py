"""Prototypes: what each of a class's k parts does to its logit, and where it appears.

Cards, heatmaps, galleries and rankings come from the refined prototypes (the rewritten head, the
same numbers as the logit); part maps from the NMF parts, before refinement, and say so.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from pages.common import cache, figures, navigation, viewmodels
from pages.common.figures import part_map_note
from pages.common.run_context import Context, require_run, run_class_features
from pages.common.state import kept
from pages.common.viewmodels import PrototypeCard, prototype_cards, signed
from protolib.data.features import Features
from protolib.evaluation.prototype_health import class_health
from protolib.explain import heatmap_overlay, part_map, upsample
from protolib.palette import prototype_hex

COLUMNS = 6  # thumbnails per gallery row
TOP_IMAGES = 6  # per prototype
CARD_WIDTH = 250  # px: cards wrap onto more rows for large k


def chosen_class(ctx: Context) -> int:
    """The position of the class shown, among the run's classes."""
    return kept(
        st.selectbox,
        "Class",
        "proto_class",
        0,
        options=list(range(len(ctx.run.classes))),
        format_func=lambda c: ctx.class_names[c],
        help="The decomposed classes of this run.",
    )


def shown_images(ctx: Context, paths) -> list:
    preprocessing = repr(ctx.backbone.preprocessing)
    return [cache.shown_image(p, preprocessing, ctx.backbone) for p in paths]


# -- the k prototypes ----------------------------------------------------------------------------
def card_sections(ctx: Context, position: int, features: Features | None, cards: list[PrototypeCard]) -> None:
    """One card per prototype, led by its mean contribution on the class's photos; cards wrap."""
    class_name = ctx.class_names[position]
    if features is not None:
        label = int(ctx.run.classes[position])
        logits = ctx.head(features.pooled)[0][:, label]
        bias = float(ctx.head.bias[label])
        total = sum(c.contribution for c in cards)
        st.caption(
            f"On its {len(features.paths)} training photos the logit of “{figures.md(class_name)}” averages "
            f"**{float(logits.mean()):.2f}** = bias {bias:+.2f} + the prototypes' mean contributions ({signed(total)}). "
            "Alpha is the weight of a prototype's NMF part in the head row, before refinement."
        )
    with st.container(horizontal=True, gap="small"):
        for card in cards:
            i = card.prototype - 1
            with st.container(border=True, width=CARD_WIDTH):
                st.markdown(figures.chip(i, f"<b>{figures.md(card.title)}</b>"), unsafe_allow_html=True)
                st.metric(
                    "mean contribution",
                    "–" if card.contribution is None else signed(card.contribution),
                    help=f"Its mean contribution to the logit of “{figures.md(class_name)}” over the class's training photos "
                    "(pooled features · refined prototype, as in the logit).",
                )
                share = "–" if card.share is None else f"{100 * card.share:.0f} %"
                st.markdown(f"**{share}** of the logit · α {signed(card.alpha, 3)}")
                st.caption(figures.md(card.meaning))
                if card.health:
                    st.warning(figures.md(card.health), icon=":material/report:")
                top = " · ".join(f"{figures.md(name)} ({score:.2f})" for name, score in card.top_classes)
                st.markdown(f"<small>Its direction scores highest for: <b>{top}</b></small>", unsafe_allow_html=True)


# -- the gallery of part maps --------------------------------------------------------------------
def part_map_gallery(ctx: Context, position: int, features: Features) -> None:
    """Part maps of every training photo of the class, a page at a time."""
    n = len(features.paths)
    note = part_map_note(ctx.head.presence_damping)
    st.subheader(f"Part maps across the {n} training images of “{figures.md(ctx.class_names[position])}” · {note}")
    figures.legend(
        ctx.run.k, "Each pixel is coloured by the NMF part most present there: ", ctx.run.prototype_name_grid()[position]
    )
    per_page = viewmodels.GALLERY_PAGE_SIZE
    n_pages = viewmodels.page_bounds(n, 1, per_page)[2]
    page = kept(st.pagination, None, f"proto_page.{ctx.key}.{position}", 1, num_pages=n_pages) if n_pages > 1 else 1
    start, stop, _ = viewmodels.page_bounds(n, page, per_page)
    maps = cache.part_maps(ctx.key, position, start, stop, features, ctx.head, shown_images(ctx, features.paths[start:stop]))
    logits = ctx.head(features.feats[start:stop])[0][:, int(ctx.run.classes[position])]
    for row_start in range(0, len(maps), COLUMNS):
        for j, col in enumerate(st.columns(COLUMNS)):
            n_img = row_start + j
            if n_img < len(maps):
                name = features.paths[start + n_img].rsplit("/", 1)[-1]
                col.image(maps[n_img], caption=f"{figures.md(name[:22])} · logit {float(logits[n_img]):.1f}", width="stretch")
    st.caption(f"Images {start + 1}–{stop} of {n}.")


# -- each prototype on its top images ------------------------------------------------------------
def top_images(ctx: Context, position: int, features: Features, contributions: torch.Tensor, cards: list[PrototypeCard]) -> None:
    """Per prototype, the photos where it moves the logit most, with its heatmap."""
    st.subheader("Each prototype on its top images")
    st.caption(
        "Images ranked by the size of the prototype's **contribution** to the class's logit (not by raw activation). "
        "The heatmap is the prototype's contribution at each place: bright adds to the logit, dark takes away; "
        "its mean over the image is the contribution."
    )
    for card, tab in zip(cards, st.tabs([figures.md(c.title) for c in cards])):
        i = card.prototype - 1
        with tab:
            order = viewmodels.rank_by_contribution(contributions, i, TOP_IMAGES)
            feats = features.feats[order]
            heat = ctx.head.heatmaps(feats, position)[:, i]
            images = shown_images(ctx, [features.paths[j] for j in order])
            st.markdown(
                f'<span style="color:{prototype_hex(i)}">■</span> {figures.named(card.name)}'
                f"mean contribution <b>{signed(card.contribution)}</b> "
                f"({100 * card.share:.0f} % of the logit) · α {signed(card.alpha, 3)} · {figures.md(card.meaning)}",
                unsafe_allow_html=True,
            )
            for col, j, h, img in zip(st.columns(TOP_IMAGES), order, heat, images):
                overlay = heatmap_overlay(upsample(h, img.shape[:2]), img)
                col.image(overlay, caption=f"contribution {float(contributions[j, i]):+.2f}", width="stretch")
            with st.expander(f"Part map of the same images ({part_map_note(ctx.head.presence_damping)})"):
                presence = ctx.head.presence(feats, position)
                for col, p, img in zip(st.columns(TOP_IMAGES), presence, images):
                    col.image(part_map(upsample(p, img.shape[:2]), img), width="stretch")


def cards_table(cards: list[PrototypeCard]) -> None:
    with st.expander("All prototypes as a table"):
        table = pd.DataFrame([{**c.row(), "colour": prototype_hex(c.prototype - 1)} for c in cards])
        st.dataframe(
            table,
            hide_index=True,
            width="stretch",
            column_config={
                "mean contribution": st.column_config.NumberColumn(format="%+.2f"),
                "share": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent"),
                "alpha (NMF part)": st.column_config.NumberColumn(format="%+.3g"),
            },
        )


# -- the page --------------------------------------------------------------------------------------
navigation.entry()
st.title("Prototypes")
st.caption(
    "Each class's head row is the sum of its *k* prototypes, and its logit the sum of their contributions. "
    "A card leads with what the prototype adds to the logit on the class's own photos: a positive contribution "
    "means *where this part shows, the class is more likely*; a negative one, *less likely* (often background "
    "or a confusable context). Name a prototype (“beak”, “water”) in the table on **Intervene**: its name shows "
    "on every page and travels with the run and the exported model."
)
ctx = require_run()
position = chosen_class(ctx)
features = run_class_features(ctx, position)
contributions = ctx.head.contributions(features.pooled)[:, position, :] if features is not None else None
health = (
    None
    if features is None
    else class_health(
        features.feats.reshape(-1, features.feats.shape[-1]),
        ctx.head.refined_prototypes[position],
        ctx.head.part_vectors[position],
        ctx.head.presence_damping,
    )
)
cards = prototype_cards(
    ctx.run.alpha[position],
    ctx.head.refined_prototypes[position],
    ctx.backbone.head_weight,
    ctx.backbone.class_names,
    ctx.class_names[position],
    contributions,
    prototype_names=ctx.run.prototype_name_grid()[position],
    health=health,
)
card_sections(ctx, position, features, cards)
if features is None:
    st.stop()
part_map_gallery(ctx, position, features)
top_images(ctx, position, features, contributions, cards)
cards_table(cards)
