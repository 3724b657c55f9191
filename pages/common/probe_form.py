"""Decompose's linear probe: a linear head fit on a frozen backbone's pooled features of the data folder, in the
background; once saved, the probed model becomes the session's backbone, decomposable whatever its classes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from pages.common import cache, figures, jobs, state
from pages.common.run_views import probe_rows
from pages.common.sidebar import probe_roots
from protolib.backbones import DEFAULT_BACKBONE, available_backbones
from protolib.backbones.probe_models import PROBE_ONLY, probe_name
from protolib.data import available_splits
from protolib.probe import DEFAULT_L2, fit_probe
from protolib.runs.names import safe_name

PROBE_TEXT = {"train": ("Features of training images", "images"), "val": ("Features of held-out images", "images")}
L2_CHOICES = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]


def probe_section(data: str, expanded: bool) -> None:
    """Fit a linear head on a frozen backbone's pooled features of ``data``; it becomes the backbone."""
    trunks = {s.name: s.label for s in available_backbones()} | PROBE_ONLY
    current = st.session_state.get("backbone") or ""
    has_train = bool(data) and "train" in available_splits(data)
    with st.expander("Fit a linear probe", icon=":material/model_training:", expanded=expanded):
        st.caption(
            f"A linear head on a frozen backbone's average-pooled features of **`{data or '(no folder)'}/train`**, "
            "one class per folder (names from classes.csv when it lists them); **val/** measures its accuracy "
            "(without it, every 5th training image is held out). The probed model is decomposed exactly, "
            "whatever its classes; VGG is offered only this way."
        )
        trunk_col, per_class_col, l2_col = st.columns(3)
        with trunk_col:
            trunk = state.kept(
                st.selectbox,
                "Backbone to probe",
                "probe_trunk",
                current if current in trunks else DEFAULT_BACKBONE,
                options=list(trunks),
                format_func=lambda n: trunks.get(n, n),
            )
        with per_class_col:
            per_class = state.kept(
                st.number_input,
                "Probe images per class",
                "probe_per_class",
                100,
                min_value=2,
                max_value=100_000,
                step=10,
                help="The first N images of each class in train/ (and in val/).",
            )
        with l2_col:
            l2 = state.kept(
                st.select_slider,
                "L2 penalty",
                "probe_l2",
                DEFAULT_L2,
                options=L2_CHOICES,
                format_func=lambda v: f"{v:g}",
                help="On standardised features; larger for few images per class. The head is fit to convergence "
                "(full-batch L-BFGS), so there are no epochs to choose.",
            )
        automatic = safe_name(f"probe-{trunk}-{Path(data).name or 'data'}")
        state.follow_automatic("probe_name", automatic)
        name_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
        with name_col:
            name = state.kept(
                st.text_input,
                "Probe name",
                "probe_name",
                automatic,
                help="Saved with your runs: only your workspace sees it until a run made from it is published.",
            )
        with button_col:
            start = st.button("Fit probe", icon=":material/play_arrow:", disabled=not has_train, width="stretch")
        if start:
            fit_and_use_probe(data, trunk, int(per_class), float(l2), name or automatic)
        probe_job()
        probe_result()
        rows = [row for root in probe_roots() for row in probe_rows(root)]
        if rows:
            st.dataframe(
                pd.DataFrame(rows),
                hide_index=True,
                width="stretch",
                column_config={"val accuracy": st.column_config.NumberColumn(format="percent")},
            )


def fit_and_use_probe(data: str, trunk: str, per_class: int, l2: float, name: str) -> None:
    """Fit in the background and save under the runs folder; ``probe_job`` follows it and makes the probe
    the session's backbone."""
    device = st.session_state.get("device") or "cpu"
    ws = state.workspace()
    model = trunk if trunk in PROBE_ONLY else cache.get_backbone(trunk, None, device)  # VGG: no cached classifier

    def work(progress) -> dict:
        def features(stage: str, done: int, total: int) -> None:
            progress("val" if "val" in stage else "train", done, total)

        probe = fit_probe(
            data,
            model,
            device=device,
            images_per_class=per_class,
            val_images_per_class=per_class,
            l2=l2,
            progress=features,
        )
        path = probe.save(ws.new_run_path(name))
        m = probe.manifest
        return {
            "name": path.name,
            "path": str(path),
            "backbone": m["backbone"],
            "classes": len(m["classes"]),
            "n_train": m["n_train"],
            "n_val": m["n_val"],
            "validation": m["validation"],
            "val_accuracy": m["val_accuracy"],
            "train_accuracy": m["train_accuracy"],
            "seconds": m["seconds"],
            "problems": m["problems"],
        }

    jobs.start("probe", "probe", work, {"label": f"Fitting a linear probe on {trunk}…"})


def probe_job() -> None:
    """Follow this workspace's probe fit (started here, or before a reload) and, once saved, make the probe
    the session's backbone."""
    job = jobs.pending("probe")
    if job is None:
        return
    ws = state.workspace()
    with st.status(job.meta["label"], expanded=True) as status:
        jobs.follow(job, texts=PROBE_TEXT)
        if job.error is not None:
            status.update(label="The probe could not be fit", state="error")
            st.error(ws.redact(job.error), icon=":material/error:")
            jobs.finished(job)
            return
        status.update(label=f"Saved probe “{job.result['name']}” in {job.result['seconds']:.1f} s", state="complete")
    session = st.session_state
    session["last_probe"] = {k: v for k, v in jobs.finished(job).result.items() if k != "path"}
    session["backbone"] = probe_name(Path(job.result["path"]))  # the sidebar shows it on the next run
    state.restart_automatic("probe_name")
    st.rerun()


def probe_result() -> None:
    last = st.session_state.get("last_probe")
    if not last:
        return
    st.success(
        f"Probe **{last['name']}** saved ({last['classes']} classes on {last['backbone']}, {last['seconds']:.1f} s). "
        "It is now the backbone: choose its classes below and run the decomposition.",
        icon=":material/check_circle:",
    )
    val_col, train_col, images_col = st.columns(3)
    val_col.metric("Validation accuracy", f"{100 * last['val_accuracy']:.1f} %", help=last["validation"])
    train_col.metric("Training accuracy", f"{100 * last['train_accuracy']:.1f} %")
    images_col.metric("Images (train + held out)", f"{last['n_train']} + {last['n_val']}")
    figures.problems_table(last["problems"], "Skipped while fitting")
