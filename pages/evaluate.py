"""Evaluate: exactness, accuracy, the paper's Table-3 analogue, heatmap fidelity per refinement
strategy, reconstruction errors against k, which k the data supports (fidelity, seed stability and dead or
duplicate prototypes of the runs at each k), and the full evaluation report."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.common import cache, figures, jobs, navigation, state
from pages.common.compare_views import comparable_runs, k_point_rows, same_class_runs, shares_a_class
from pages.common.evaluation_views import evaluation_rows, fidelity_per_class_rows, fidelity_rows, k_sweep_rows, table3_rows
from pages.common.heldout import HeldOut, held_out_controls, held_out_features
from pages.common.run_context import Context, require_run
from pages.common.run_views import same_model_runs
from pages.common.sidebar import runs_by_name
from protolib import charts
from protolib.backbones import Backbone
from protolib.data import BadImage, DataError
from protolib.data.features import SplitFeatures
from protolib.evaluation.compare import MAX_RUNS
from protolib.evaluation.k_choice import k_sweep_point, suggest_k
from protolib.evaluation.metrics import training_matrices
from protolib.evaluation.prototype_health import DEAD_SHARE, DUPLICATE_CORRELATION, health_counts, training_health
from protolib.report import ReportSettings, build_report, report_documents
from protolib.report.build_method import seed_stability_section
from protolib.runs import Run, RunError

#: the thresholds of the rule that picks k (protolib.evaluation.k_choice.suggest_k)
K_IMPROVEMENT, K_MIN_FIDELITY = 0.05, 0.95


def held_out_figures(ctx: Context, held_out: HeldOut, sf: SplitFeatures) -> None:
    """Accuracy, exactness, Table 3, heatmap fidelity and every figure as a table."""
    m = cache.evaluation(held_out.key(ctx), held_out.data, held_out.split, ctx.run, ctx.backbone, sf)
    original_col, prototype_col, exact_col, photos_col = st.columns(4)
    original_col.metric("Top-1, original model", f"{100 * m['top1_original']:.1f} %")
    prototype_col.metric(
        "Top-1, prototype network",
        f"{100 * m['top1_prototype']:.1f} %",
        delta=f"{100 * (m['top1_prototype'] - m['top1_original']):+.1f} pts",
        delta_color="off",
    )
    exact_col.metric("Max |logit difference|", f"{m['max_abs_logit_diff']:.1e}", help="Exactness; ≤ 1e-4 in fp32.")
    photos_col.metric("Held-out photos", m["n_images"], help=f"{len(set(sf.labels.tolist()))} classes")
    if ctx.run.scale is not None:
        st.info(
            f"This run carries an intervention ({ctx.run.manifest.get('intervention')}): its head is edited on purpose.",
            icon=":material/tune:",
        )
    left, right = st.columns(2, gap="large")
    left.plotly_chart(charts.table3_bars(table3_rows(m), m["k"]), width="stretch", config=figures.PLAIN)
    right.plotly_chart(charts.fidelity_bars(fidelity_rows(m)), width="stretch", config=figures.PLAIN)

    st.markdown("##### All figures")
    table = pd.DataFrame(evaluation_rows(m))
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        height=35 * (len(table) + 1) + 3,
        column_config={
            name: st.column_config.TextColumn(width=size)
            for name, size in (("figure", "medium"), ("value", "medium"), ("meaning", "large"))
        },
    )
    per_class = fidelity_per_class_rows(m, ctx.backbone.class_names)
    if per_class:
        with st.expander("Heatmap fidelity per class"):
            strategies = [c for c in per_class[0] if c != "class"]
            st.dataframe(
                pd.DataFrame(per_class),
                hide_index=True,
                width="stretch",
                column_config={s: st.column_config.NumberColumn(format="%.3f") for s in strategies},
            )
    for note in m.get("notes", []):
        st.caption(f"Note: {note}")
    figures.problems_table(m.get("problems", []), "Held-out files skipped")


def errors_against_k(ctx: Context) -> None:
    """Figure 5's analogue from the saved runs of the same model: no photos needed."""
    st.markdown("##### Reconstruction errors against k")
    runs = []
    for saved in same_model_runs(list(runs_by_name().values()), ctx.run.manifest.get("fingerprint")):
        try:
            runs.append(cache.get_run(str(saved.path), saved.modified))
        except (RunError, OSError):
            continue
    sweep = k_sweep_rows(runs, ctx.backbone.head_weight)
    several_k = len({r["k"] for r in sweep}) >= 2
    if not several_k:
        st.caption(
            "Make runs of the same model with other values of k on **Decompose** to see how the feature and head "
            "reconstruction errors fall as k grows."
        )
    if not sweep:
        return
    table = pd.DataFrame(sweep)
    if several_k:
        by_k = table.groupby("k")[["feature reconstruction error", "head reconstruction error"]].mean().reset_index()
        st.plotly_chart(charts.errors_against_k(by_k), width="stretch", config=figures.PLAIN)
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        column_config={
            "feature reconstruction error": st.column_config.NumberColumn(format="%.3f"),
            "head reconstruction error": st.column_config.NumberColumn(format="%.3f"),
        },
    )


@st.cache_data(max_entries=64, show_spinner=False)
def seed_stability_of(key: str, _run: Run, _backbone: Backbone) -> dict | None:
    """The run's NMF prototypes against a second seed's (the report's seed stability, 2 seeds); None when its
    training images are gone (``key`` names the run version and the model)."""
    try:
        return seed_stability_section(_run, training_matrices(_run, _backbone), seeds=2)
    except (DataError, BadImage, OSError):
        return None


@st.cache_data(max_entries=64, show_spinner=False)
def health_of(key: str, _run: Run, _backbone: Backbone) -> dict | None:
    """How many of the run's prototypes are dead or duplicates on its training photos (the photos its cards
    read); None when they are gone (``key`` names the run version and the model)."""
    try:
        return health_counts(training_health(_run, _backbone))
    except (DataError, BadImage, OSError):
        return None


def k_points(ctx: Context, held_out: HeldOut, sf: SplitFeatures, saved_runs: list) -> list[dict]:
    """Each run's point against k: errors, signed held-out fidelity of its strategy and seed stability
    (each cached per run), with a progress bar."""
    bar = st.progress(0.0, text="Measuring each k…")
    points = []
    for n, saved in enumerate(saved_runs):
        bar.progress(n / len(saved_runs), text=f"Run {saved.name} ({n + 1}/{len(saved_runs)}): fidelity and seed stability")
        try:
            run = cache.get_run(str(saved.path), saved.modified)
            if run.manifest["backbone"] != ctx.backbone.name:
                continue
            version = f"{saved.path}|{saved.modified}|{cache.backbone_key(ctx.backbone)}"
            evaluation = cache.evaluation(
                f"{version}|{held_out.data}|{held_out.split}|{held_out.per_class}|{held_out.classes}",
                held_out.data,
                held_out.split,
                run,
                ctx.backbone,
                sf,
            )
            stability = seed_stability_of(version, run, ctx.backbone)
            health = health_of(version, run, ctx.backbone)
        except (RunError, DataError, OSError) as exc:
            st.caption(f"Run {saved.name} left out: {exc}")
            continue
        points.append(k_sweep_point(run, ctx.backbone.head_weight, evaluation, stability, health))
    bar.empty()
    return points


def choosing_k(ctx: Context, held_out: HeldOut, sf: SplitFeatures | None) -> None:
    """Against k, for the saved runs of this model and these classes: head and feature errors, signed
    fidelity and seed stability, and the k the data supports by a stated rule (protolib's ``suggest_k``)."""
    st.markdown("##### Which k the data supports")
    same = same_class_runs(same_model_runs(list(runs_by_name().values()), ctx.run.manifest.get("fingerprint")), ctx.run.manifest)
    if len({r.manifest["params"].get("k") for r in same}) < 2:
        st.caption(
            "Make runs of this model and these classes with other values of k on **Decompose** (e.g. 1, 3, 5, "
            "10) to see which k the data supports."
        )
        return
    if sf is None:
        st.caption(
            f"{len(same)} runs of this model and these classes: evaluate on the held-out split above to measure "
            "their fidelity and stability against k."
        )
        return
    ready = st.session_state.setdefault("k_choice_ready", [])
    key = held_out.key(ctx)
    if key not in ready:
        if not st.button("Measure fidelity and stability for each k", icon=":material/straighten:"):
            st.caption(
                f"{len(same)} runs: the signed fidelity of each on the held-out photos, and its NMF prototypes "
                "against a second seed's (cached per run)."
            )
            return
        ready.append(key)
    points = k_points(ctx, held_out, sf, same)
    choice = suggest_k(points, K_IMPROVEMENT, K_MIN_FIDELITY)
    st.plotly_chart(charts.k_choice_chart(choice.per_k, choice.k, K_MIN_FIDELITY), width="stretch", config=figures.PLAIN)
    (st.success if choice.k is not None else st.info)(choice.sentence, icon=":material/straighten:")
    st.caption(
        f"Rule: {choice.rule}. With several runs of one k, the one with the best fidelity stands for it. "
        f"**dead**: prototypes below {100 * DEAD_SHARE:g} % of their class's logit on its training photos; "
        f"**duplicates**: prototypes whose part map correlates above {DUPLICATE_CORRELATION:g} with another's "
        "there (as on Prototypes)."
    )
    st.dataframe(
        pd.DataFrame(k_point_rows(points)),
        hide_index=True,
        width="stretch",
        column_config={
            c: st.column_config.NumberColumn(format="%.3f")
            for c in ("head error", "feature error", "fidelity", "worst fidelity", "seed stability")
        },
    )


def compare_choice(ctx: Context) -> list[str]:
    """Other runs to show side by side with this one in the report (its "comparison" section)."""
    runs = runs_by_name()
    options = [n for n in comparable_runs(runs) if n != ctx.name and shares_a_class(ctx.run.manifest, runs[n].manifest)]
    if not options:
        return []
    names = st.multiselect(
        "Compare with (side by side in the report)",
        options,
        key="report_compare_with",
        max_selections=MAX_RUNS - 1,
        help="Runs that decomposed a class of this one: the report gains a section with them side by side on the same "
        "held-out photos of every shared class (as the Compare page shows one).",
    )
    return [str(runs[n].path) for n in names if n in runs]


def report_section(ctx: Context, held_out: HeldOut) -> None:
    """The whole evaluation report (protolib.report): built on demand, offered as HTML and JSON."""
    st.markdown("##### Evaluation report")
    st.caption(
        "One self-contained HTML page (and its numbers as JSON) for this run: exactness, Table 3 and Figure 5 against "
        "k, refinement fidelity with example heatmaps, stability across NMF seeds, ProtoEval where the data has "
        "keypoints, the explainability axioms, deletion and insertion against Grad-CAM, and the intervention oracle. "
        "It uses the held-out images of the run's classes, with the images-per-class setting above."
    )
    faith_images = st.number_input(
        "Images for the deletion / insertion curves",
        min_value=1,
        max_value=64,
        value=8,
        key="report_faith_images",
        help="Each image costs about 2 x 16 backbone passes; 8 take under a minute on a CPU.",
    )
    compare_with = compare_choice(ctx)
    report_key = f"report.{ctx.key}.{(held_out.data, held_out.split, held_out.per_class, tuple(compare_with))}"
    if st.button("Build the report", icon=":material/description:"):
        start_report(ctx, held_out, int(faith_images), compare_with, report_key)
    finished_key = report_job(ctx)
    if report_key in st.session_state:
        report_downloads(ctx, *st.session_state[report_key])
    elif finished_key in st.session_state:  # asked for before a reload, with other settings than now
        st.caption("Your report, built with the settings it was asked for:")
        report_downloads(ctx, *st.session_state[finished_key])


REPORT_TEXT = {"report": ("Report sections", "sections"), "val": ("Held-out features", "images")}


def start_report(ctx: Context, held_out: HeldOut, faith_images: int, compare_with: tuple[str, ...], key: str) -> None:
    """Build the report in the background (it goes on when the page is reloaded); ``report_job`` follows it."""
    settings = ReportSettings(
        split=held_out.split,
        images_per_class=held_out.per_class or None,
        faithfulness_images=faith_images,
        compare_with=tuple(compare_with),
    )
    run, backbone, data = ctx.run, ctx.backbone, held_out.data

    def work(progress):
        built = build_report(run, backbone, data, settings, progress=progress)
        return (*report_documents(built), built.figures)

    jobs.start("report", "report", work, {"key": key, "run": ctx.key})


def report_job(ctx: Context) -> str | None:
    """Follow this workspace's report for the current run (started here, or before a reload); once built,
    keep it in the session under its settings' key, which is returned."""
    job = jobs.pending("report")
    if job is None or job.meta["run"] != ctx.key:
        return None
    with st.status("Building the report…", expanded=True) as status:
        jobs.follow(job, texts=REPORT_TEXT)
        if job.error is not None:
            status.update(label="The report could not be built", state="error")
            st.error(f"The report could not be built: {state.workspace().redact(job.error)}")
            jobs.finished(job)
            return None
        status.update(label="Report built", state="complete")
    st.session_state[job.meta["key"]] = jobs.finished(job).result
    return job.meta["key"]


def auc_mean(value) -> float:
    """An AUC of the report: a number, or its mean with a 95 % interval."""
    return value["mean"] if isinstance(value, dict) else value


def report_downloads(ctx: Context, page_html: str, page_json: str, report: dict) -> None:
    """The report's headline numbers and its two downloads."""
    axioms, faith = report["axioms"], report["deletion_insertion"]
    cols = st.columns(3)
    if axioms.get("available"):
        cols[0].metric("Completeness, max error", f"{axioms['completeness']['max_error']:.1e}")
    if faith.get("available"):
        shown = [m for m in ("refined heatmap", "Grad-CAM") if m in faith["methods"]] or list(faith["methods"])[:2]
        for col, method in zip(cols[1:], shown):
            values = faith["methods"][method]
            col.metric(
                f"{method}: deletion / insertion AUC",
                f"{auc_mean(values['deletion_auc']):.3f} / {auc_mean(values['insertion_auc']):.3f}",
            )
    html_col, json_col = st.columns(2)
    html_col.download_button(
        "Download the report (HTML)",
        page_html,
        file_name=f"{ctx.name}-report.html",
        mime="text/html",
        icon=":material/download:",
        width="stretch",
    )
    json_col.download_button(
        "Download the figures (JSON)",
        page_json,
        file_name=f"{ctx.name}-report.json",
        mime="application/json",
        icon=":material/data_object:",
        width="stretch",
    )


# -- the page --------------------------------------------------------------------------------------
navigation.entry()
st.title("Evaluate")
st.caption(
    "How exact the rewritten head is, how much the NMF prototypes alone explain, and how well each refinement "
    "strategy keeps the prototypes' heatmaps on held-out photos."
)
ctx = require_run()
held_out = held_out_controls(ctx)
sf = held_out_features(ctx, held_out, compute=False)
if sf is None:
    if st.button("Evaluate on the held-out split", type="primary", icon=":material/play_arrow:"):
        sf = held_out_features(ctx, held_out, compute=True)
    else:
        st.caption("The held-out photos pass through the backbone once (cached on disk afterwards).")
if sf is not None:
    held_out_figures(ctx, held_out, sf)
st.divider()
errors_against_k(ctx)
choosing_k(ctx, held_out, sf)
st.divider()
report_section(ctx, held_out)
