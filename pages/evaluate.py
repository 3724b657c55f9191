"""Evaluate: exactness, accuracy, the paper's Table-3 analogue, heatmap fidelity per refinement
strategy, and reconstruction errors against k."""

import time

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import ui
from protolib import appstate
from protolib.data import DataError
from protolib.metrics import evaluate_run
from protolib.report import SECTIONS, ReportSettings, build_report, report_documents
from protolib.runs import RunError, list_runs

STRATEGY_COLOURS = {"optimized": "#0f6e8c", "paper": "#e76f51", "uniform": "#e9c46a", "proportional": "#8ab17d"}

ui.entry()
st.title("Evaluate")
st.caption(
    "How exact the rewritten head is, how much the NMF prototypes alone explain, and how well each refinement "
    "strategy keeps the prototypes' heatmaps on held-out photos."
)
ctx = ui.require_run()
run = ctx.run


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


settings = ui.val_controls(ctx)
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

# -- the whole evaluation report (protolib.report): built on demand, offered as HTML and JSON -----
st.divider()
st.markdown("##### Evaluation report")
st.caption(
    "One self-contained HTML page (and its numbers as JSON) for this run: exactness, Table 3 and Figure 5 against k, "
    "refinement fidelity with example heatmaps, stability across NMF seeds, ProtoEval where the data has keypoints, "
    "the explainability axioms, deletion and insertion against Grad-CAM, and the intervention oracle. It uses the "
    "held-out images of the run's classes, with the images-per-class setting above."
)
report_key = f"report.{ctx.key}.{settings[:3]}"
faith_images = st.number_input(
    "Images for the deletion / insertion curves", min_value=1, max_value=64, value=8, key="report_faith_images",
    help="Each image costs about 2 x 16 backbone passes; 8 take under a minute on a CPU.",
)
if st.button("Build the report", icon=":material/description:"):
    bar = st.progress(0.0, text="Starting the report…")
    started = time.perf_counter()

    def report_progress(stage, done, total):
        seconds = time.perf_counter() - started
        if stage == "report":
            title = list(SECTIONS.values())[min(done, len(SECTIONS) - 1)]
            bar.progress(done / max(total, 1), text=f"Section {min(done + 1, total)}/{total}: {title} · {seconds:.0f} s")
        else:
            bar.progress(done / max(total, 1), text=f"{stage}: {done}/{total} · {seconds:.0f} s")

    try:
        built = build_report(
            run, ctx.backbone, settings[0],
            ReportSettings(split=settings[1], images_per_class=settings[2] or None, faithfulness_images=int(faith_images)),
            progress=report_progress,
        )
    except (DataError, RunError, ValueError, OSError) as exc:
        bar.empty()
        st.error(f"The report could not be built: {exc}")
    else:
        bar.empty()
        st.session_state[report_key] = (*report_documents(built), built.figures)
if report_key in st.session_state:
    page_html, page_json, figures = st.session_state[report_key]
    axioms = figures["axioms"]
    cols = st.columns(3)
    if axioms.get("available"):
        cols[0].metric("Completeness, max error", f"{axioms['completeness']['max_error']:.1e}")
    faith = figures["deletion_insertion"]
    if faith.get("available"):
        for col, (method, values) in zip(cols[1:], faith["methods"].items()):
            col.metric(f"{method}: deletion / insertion AUC", f"{values['deletion_auc']:.3f} / {values['insertion_auc']:.3f}")
    left, right = st.columns(2)
    left.download_button(
        "Download the report (HTML)", page_html, file_name=f"{ctx.name}-report.html", mime="text/html",
        icon=":material/download:", width="stretch",
    )
    right.download_button(
        "Download the figures (JSON)", page_json, file_name=f"{ctx.name}-report.json", mime="application/json",
        icon=":material/data_object:", width="stretch",
    )
