"""Explain: one photo, its top classes, and a class's logit as the sum of its prototypes' contributions."""

import pandas as pd
import streamlit as st

from pages import ui
from protolib.explain import explain_features, heatmap_overlay, part_map

ui.entry()
st.title("Explain")
st.caption(
    "The prototype network's logit for a class is the bias plus one contribution per prototype; each contribution "
    "is the mean of that prototype's heatmap over the photo."
)
ctx = ui.require_run()
head = ctx.head

picked = ui.image_picker(ctx)
if picked is None:
    st.stop()

logits, contributions = head(picked.feats.unsqueeze(0))
logits = logits[0]
decomposed = [int(c) for c in head.classes]
probs = logits.softmax(dim=0)
top = probs.topk(5)
predicted = int(logits.argmax())

image_col, top_col = st.columns([1, 2], gap="large")
with image_col:
    st.image(picked.shown, caption=f"{picked.name} (as the model sees it)", width="stretch")
with top_col:
    st.markdown("##### Top-5 classes")
    st.dataframe(
        pd.DataFrame(
            {
                "class": [ctx.labels[int(c)] for c in top.indices],
                "probability": [float(p) for p in top.values],
                "logit": [float(logits[int(c)]) for c in top.indices],
                "decomposed": ["✓" if int(c) in decomposed else "" for c in top.indices],
            }
        ),
        hide_index=True,
        width="stretch",
        column_config={
            "probability": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent"),
            "logit": st.column_config.NumberColumn(format="%.2f"),
            "decomposed": st.column_config.TextColumn(help="✓: the run has prototypes for this class"),
        },
    )
    default = predicted if predicted in decomposed else decomposed[int(logits[head.classes].argmax())]
    if predicted not in decomposed:
        st.info(
            f"The predicted class “{ctx.labels[predicted]}” was not decomposed in this run; "
            "showing the highest-scoring decomposed class instead."
        )
    label = ui.kept(
        st.selectbox, "Class to explain", f"explain_class.{picked.key}", default, options=decomposed,
        format_func=lambda c: ctx.labels[c] + ("  (predicted)" if c == predicted else ""),
    )

e = explain_features(head, picked.feats, picked.shown, label)
k = len(e.contributions)
st.divider()
chart_col, map_col = st.columns([3, 2], gap="large")
with chart_col:
    st.plotly_chart(
        ui.waterfall(e.contributions, e.bias, f"“{ctx.labels[label]}”: logit {e.logit:.2f} = bias + prototypes"),
        width="stretch",
        config={"displayModeBar": False},
    )
with map_col:
    st.markdown(f"##### Part map of “{ctx.labels[label]}”")
    st.image(part_map(e.presence, e.image), width="stretch")
    ui.legend(k)

st.markdown("##### Each prototype's heatmap")
st.caption("Bright: the place adds to the logit; dark: it takes away. Its mean is the contribution.")
per_row = min(max(k, 4), 5)
for start in range(0, k, per_row):
    cols = st.columns(per_row)
    for i, col in zip(range(start, start + per_row), cols):
        if i < k:
            with col:
                st.image(heatmap_overlay(e.heatmaps[i], e.image), width="stretch")
                st.markdown(ui.chip(i, f"P{i + 1}: <b>{float(e.contributions[i]):+.2f}</b>"), unsafe_allow_html=True)
