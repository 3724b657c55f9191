"""Prototypes: what each of a class's k parts is, how much it weighs, and where it appears."""

import pandas as pd
import streamlit as st

from pages import ui
from protolib import appstate
from protolib.explain import heatmap_overlay, part_map, prototype_hex, upsample

COLUMNS = 6  # thumbnails per gallery row
TOP_IMAGES = 6  # per prototype

ui.entry()
st.title("Prototypes")
st.caption(
    "Each class's head row is the sum of its *k* prototypes. A prototype's **alpha** is the weight its NMF part "
    "gets in the head: positive alpha means *more like this part, more likely the class*; negative alpha means "
    "*less like this part, more likely the class* (often background or a confusable context)."
)
ctx = ui.require_run()
run, head = ctx.run, ctx.head

positions = list(range(len(run.classes)))
position = ui.kept(
    st.selectbox, "Class", "proto_class", 0, options=positions, format_func=lambda c: ctx.class_names[c],
    help="The decomposed classes of this run.",
)
label = int(run.classes[position])
class_name = ctx.class_names[position]
features = ui.run_class_features(ctx, position)
contributions = head.contributions(features.pooled)[:, position, :] if features is not None else None
rows = appstate.prototype_rows(
    run.alpha[position], head.prototypes[position], ctx.backbone.head_weight, ctx.labels, class_name, contributions
)

# -- the k prototypes --------------------------------------------------------------------------
per_row = min(run.k, 5)
for start in range(0, run.k, per_row):
    cols = st.columns(per_row)
    for col, row in zip(cols, rows[start : start + per_row]):
        i = row["prototype"] - 1
        with col, st.container(border=True):
            st.markdown(ui.chip(i, f"<b>Prototype {i + 1}</b>"), unsafe_allow_html=True)
            a, b = st.columns(2)
            a.metric("alpha", f"{row['alpha']:+.3f}", help="Weight of the NMF part in the head row.")
            b.metric(
                "share of logit", "–" if pd.isna(row["share"]) else f"{100 * row['share']:.0f} %",
                help="|mean contribution| over the class's training images, as a share of all its prototypes'.",
            )
            st.caption(row["meaning"])
            if not pd.isna(row["mean contribution"]):
                st.markdown(f"Mean contribution to the logit: **{row['mean contribution']:+.2f}**")
            top = " · ".join(f"{name} ({score:.2f})" for name, score in row["top classes"])
            st.markdown(f"<small>Its direction scores highest for: <b>{top}</b></small>", unsafe_allow_html=True)

if features is None:
    st.stop()


@st.cache_data(max_entries=64, show_spinner="Drawing part maps…")
def part_maps(key: str, position: int, start: int, stop: int, _features, _head, _shown) -> list:
    presence = _head.presence(_features.feats[start:stop], position)
    return [part_map(upsample(p, img.shape[:2]), img) for p, img in zip(presence, _shown)]


def shown(paths) -> list:
    pre = repr(ctx.backbone.preprocessing)
    return [ui.shown_image(p, pre, ctx.backbone) for p in paths]


# -- the gallery of part maps ------------------------------------------------------------------
st.subheader(f"Part maps across the {len(features.paths)} training images of “{class_name}”")
ui.legend(run.k, "Each pixel is coloured by the part most present there: ")
n = len(features.paths)
page_key = f"proto_page.{ctx.key}.{position}"
per_page = appstate.GALLERY_PAGE_SIZE
n_pages = appstate.page_bounds(n, 1, per_page)[2]
page = 1
if n_pages > 1:
    page = ui.kept(st.pagination, None, page_key, 1, num_pages=n_pages)
start, stop, _ = appstate.page_bounds(n, page, per_page)
maps = part_maps(ctx.key, position, start, stop, features, head, shown(features.paths[start:stop]))
logits = head(features.feats[start:stop])[0][:, label]
for row_start in range(0, len(maps), COLUMNS):
    cols = st.columns(COLUMNS)
    for j, col in enumerate(cols):
        n_img = row_start + j
        if n_img < len(maps):
            name = features.paths[start + n_img].rsplit("/", 1)[-1]
            col.image(maps[n_img], caption=f"{name[:22]} · logit {float(logits[n_img]):.1f}", width="stretch")
st.caption(f"Images {start + 1}–{stop} of {n}.")

# -- each prototype: heatmaps of its top images ------------------------------------------------
st.subheader("Each prototype on its top images")
st.caption(
    "Images ranked by the size of the prototype's **contribution** to the class's logit (not by raw activation). "
    "The heatmap is the prototype's contribution at each place: bright adds to the logit, dark takes away; "
    "its mean over the image is the contribution."
)
tabs = st.tabs([f"Prototype {i + 1}" for i in range(run.k)])
for i, tab in enumerate(tabs):
    with tab:
        order = appstate.rank_by_contribution(contributions, i, TOP_IMAGES)
        feats = features.feats[order]
        heat = head.heatmaps(feats, position)[:, i]
        images = shown([features.paths[j] for j in order])
        st.markdown(
            f'<span style="color:{prototype_hex(i)}">■</span> alpha {rows[i]["alpha"]:+.3f} · '
            f"{rows[i]['meaning']}",
            unsafe_allow_html=True,
        )
        cols = st.columns(TOP_IMAGES)
        for col, j, h, img in zip(cols, order, heat, images):
            overlay = heatmap_overlay(upsample(h, img.shape[:2]), img)
            col.image(overlay, caption=f"contribution {float(contributions[j, i]):+.2f}", width="stretch")
        with st.expander("Part map of the same images"):
            presence = head.presence(feats, position)
            cols = st.columns(TOP_IMAGES)
            for col, p, img in zip(cols, presence, images):
                col.image(part_map(upsample(p, img.shape[:2]), img), width="stretch")

with st.expander("All prototypes as a table"):
    table = pd.DataFrame(
        [
            {
                "prototype": r["prototype"],
                "colour": prototype_hex(r["prototype"] - 1),
                "alpha": r["alpha"],
                "mean contribution": r["mean contribution"],
                "share": r["share"],
                "top classes of its direction": ", ".join(name for name, _ in r["top classes"]),
                "meaning": r["meaning"],
            }
            for r in rows
        ]
    )
    st.dataframe(
        table, hide_index=True, width="stretch",
        column_config={"share": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent")},
    )
