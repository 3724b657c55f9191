"""Evaluate: exactness, accuracy, the paper's Table-3 analogue, heatmap fidelity per refinement
strategy, and reconstruction errors against k."""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import ui
from protolib import appstate
from protolib.metrics import evaluate_run
from protolib.runs import RunError, list_runs

STRATEGY_COLOURS = {"optimized": "#0f6e8c", "paper": "#e76f51", "uniform": "#e9c46a", "proportional": "#8ab17d"}

ui.entry()
ctx = ui.require_run()
run = ctx.run
st.title("Evaluate")
st.caption(
    "How exact the rewritten head is, how much the NMF prototypes alone explain, and how well each refinement "
    "strategy keeps the prototypes' heatmaps on held-out photos."
)


@st.cache_data(max_entries=16, show_spinner="Evaluating…")
def evaluate(key: str, settings: tuple, _ctx, _features) -> dict:
    return evaluate_run(_ctx.run, _ctx.backbone, settings[0], settings[1], features=_features)


def bar_figure(names, values, colours, title, percent=True, extra=None):
    fig = go.Figure(
        go.Bar(
            x=names, y=values, marker_color=colours, name="mean",
            text=[f"{100 * v:.1f} %" if percent else f"{v:.3f}" for v in values], textposition="outside",
        )
    )
    if extra is not None:
        fig.add_trace(extra)
    top = max([*values, 1e-6])
    fig.update_layout(
        title={"text": title, "font": {"size": 15}}, height=330, margin={"l": 10, "r": 10, "t": 50, "b": 10},
        yaxis={"range": [0, 1.12 if top <= 1 else 1.15 * top], "tickformat": ".0%" if percent else None},
        showlegend=extra is not None, legend={"orientation": "h", "y": -0.2},
    )
    return fig


settings = ui.val_controls(ctx, "ev")
sf = ui.val_features(ctx, settings, compute=False)
if sf is None:
    if st.button("Evaluate on the held-out split", type="primary", icon=":material/play_arrow:"):
        sf = ui.val_features(ctx, settings, compute=True)
    else:
        st.caption("The held-out photos pass through the backbone once (cached on disk afterwards).")

if sf is not None:
    m = evaluate(ctx.key, settings, ctx, sf)
    cols = st.columns(4)
    cols[0].metric("Top-1, original model", f"{100 * m['top1_original']:.1f} %")
    cols[1].metric(
        "Top-1, prototype network", f"{100 * m['top1_prototype']:.1f} %",
        delta=f"{100 * (m['top1_prototype'] - m['top1_original']):+.1f} pts", delta_color="off",
    )
    cols[2].metric("Max |logit difference|", f"{m['max_abs_logit_diff']:.1e}", help="Exactness; ≤ 1e-4 in fp32.")
    cols[3].metric("Held-out photos", m["n_images"], help=f"{len(set(sf.labels.tolist()))} classes")
    if run.scale is not None:
        st.info(
            f"This run carries an intervention ({run.manifest.get('intervention')}): its head is edited on purpose.",
            icon=":material/tune:",
        )

    left, right = st.columns(2, gap="large")
    with left:
        rows = appstate.table3_rows(m)
        st.plotly_chart(
            bar_figure(
                [r["head rows"] for r in rows], [r["top-1"] for r in rows], ["#b0bec5", "#e9c46a", "#0f6e8c"],
                f"Top-1 by head rows used, k = {m['k']} (Table 3)",
            ),
            width="stretch", config={"displayModeBar": False},
        )
    with right:
        fid = appstate.fidelity_rows(m)
        worst = go.Scatter(
            x=[r["strategy"] for r in fid], y=[r["worst prototype"] for r in fid], mode="markers",
            marker={"symbol": "line-ew-open", "size": 34, "color": "#1d3557", "line": {"width": 3, "color": "#1d3557"}},
            name="worst prototype",
        )
        st.plotly_chart(
            bar_figure(
                [r["strategy"] for r in fid], [r["mean"] for r in fid],
                [STRATEGY_COLOURS.get(r["strategy"], "#888") for r in fid],
                "Heatmap fidelity per refinement strategy", percent=False, extra=worst,
            ),
            width="stretch", config={"displayModeBar": False},
        )

    st.markdown("##### All figures")
    figures = pd.DataFrame(appstate.evaluation_rows(m))
    st.dataframe(figures, hide_index=True, width="stretch", height=35 * (len(figures) + 1) + 3)
    per_class = appstate.fidelity_per_class_rows(m, ctx.labels)
    if per_class:
        with st.expander("Heatmap fidelity per class"):
            strategies = [c for c in per_class[0] if c != "class"]
            st.dataframe(
                pd.DataFrame(per_class), hide_index=True, width="stretch",
                column_config={s: st.column_config.NumberColumn(format="%.3f") for s in strategies},
            )
    ui.problems_table(m.get("problems", []), "Held-out files skipped")

# -- errors against k (Figure 5's analogue): from the saved runs, no photos needed ---------------
st.divider()
st.markdown("##### Reconstruction errors against k")
same_model = []
for path in list_runs(appstate.runs_dir()):
    manifest = appstate.read_manifest(path) or {}
    if manifest.get("fingerprint") == run.manifest.get("fingerprint") and not manifest.get("intervention"):
        try:
            same_model.append(ui.get_run(str(path), (path / "manifest.json").stat().st_mtime))
        except (RunError, OSError):
            continue
sweep = appstate.k_sweep_rows(same_model, ctx.backbone.head_weight)
if len({r["k"] for r in sweep}) < 2:
    st.caption(
        "Make runs of the same model with other values of k on **Decompose** to see how the feature and head "
        "reconstruction errors fall as k grows."
    )
if sweep:
    table = pd.DataFrame(sweep)
    if len({r["k"] for r in sweep}) >= 2:
        by_k = table.groupby("k")[["feature reconstruction error", "head reconstruction error"]].mean().reset_index()
        fig = go.Figure(
            [
                go.Scatter(x=by_k["k"], y=by_k[col], mode="lines+markers", name=col, line={"color": colour})
                for col, colour in (
                    ("feature reconstruction error", "#0f6e8c"), ("head reconstruction error", "#e76f51")
                )
            ]
        )
        fig.update_layout(
            height=320, margin={"l": 10, "r": 10, "t": 20, "b": 10}, xaxis={"title": "k", "dtick": 1},
            yaxis={"title": "relative error"}, legend={"orientation": "h", "y": -0.25},
        )
        st.plotly_chart(fig, width="stretch", config={"displayModeBar": False})
    st.dataframe(
        table, hide_index=True, width="stretch",
        column_config={
            "feature reconstruction error": st.column_config.NumberColumn(format="%.3f"),
            "head reconstruction error": st.column_config.NumberColumn(format="%.3f"),
        },
    )
