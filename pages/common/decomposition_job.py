"""Decompose's run: the decomposition started in the background with the form's settings, followed with a
progress bar per stage (also after a reload: it went on meanwhile), and what it gave once saved."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from pages.common import figures, jobs, navigation, state
from pages.common.jobs import STAGE_TEXT
from pages.common.sidebar import select_run_path
from protolib.backbones import Backbone
from protolib.method.discovery import DEFAULT_DISCOVERY
from protolib.pipeline import run_decomposition
from protolib.runs import save_run
from protolib.runs.names import safe_name


@dataclass
class Settings:
    """What the run form (the page's section 2) asks the decomposition for."""

    classes: list[str]  # class folders
    k: int
    per_class: int
    strategy: str
    random_state: int
    name: str
    discovery: str = DEFAULT_DISCOVERY


def decompose(backbone: Backbone, data: str, settings: Settings) -> None:
    """Start the decomposition in the background; ``decomposition_job`` follows it."""
    try:
        name = safe_name(settings.name)
    except ValueError as exc:
        st.error(str(exc))
        return
    ws = state.workspace()

    def work(progress) -> dict:
        started = time.perf_counter()
        run = run_decomposition(
            backbone,
            data,
            "train",
            classes=settings.classes,
            images_per_class=settings.per_class,
            k=settings.k,
            strategy=settings.strategy,
            random_state=settings.random_state,
            progress=progress,
            discovery=settings.discovery,
        )
        path = save_run(run, ws.new_run_path(name))
        return {
            "run": path.name,
            "path": str(path),
            "seconds": time.perf_counter() - started,
            "classes": len(run.classes),
            "images": sum(c["n_images"] for c in run.manifest["classes"]),
            "k": run.k,
            "problems": run.manifest["problems"],
        }

    jobs.start(
        "decomposition", "decomposition", work, {"label": f"Decomposing {len(settings.classes)} classes with k = {settings.k}…"}
    )


def decomposition_job() -> None:
    """Follow this workspace's decomposition (started here, or before a reload: it went on meanwhile) with
    a progress bar per stage; once saved, it becomes the current run."""
    job = jobs.pending("decomposition")
    if job is None:
        return
    ws = state.workspace()
    with st.status(job.meta["label"], expanded=True) as status:
        jobs.follow(job, STAGE_TEXT)
        if job.error is not None:
            status.update(label="The decomposition failed", state="error")
            st.error(ws.redact(job.error), icon=":material/error:")
            jobs.finished(job)
            return
        status.update(label=f"Saved run “{job.result['run']}” in {job.result['seconds']:.1f} s", state="complete")
    result = jobs.finished(job).result
    st.session_state["last_decomposition"] = {
        **{k: v for k, v in result.items() if k != "path"},
        "stages": [
            {
                "stage": STAGE_TEXT[s][0],
                "done": t["done"],
                "total": t["total"],
                "unit": STAGE_TEXT[s][1],
                "seconds": round(t["seconds"], 2),
            }
            for s, t in job.progress.items()
            if s in STAGE_TEXT
        ],
    }
    state.restart_automatic("dec_name")
    select_run_path(Path(result["path"]))
    st.rerun()


def last_decomposition() -> None:
    """What the session's last decomposition gave: stages, time and skipped files."""
    last = st.session_state.get("last_decomposition")
    if not last:
        return
    with st.container(border=True):
        st.success(
            f"Run **{last['run']}** saved: {last['classes']} classes, {last['images']} images, k = {last['k']}, "
            f"in {last['seconds']:.1f} s. It is now the current run.",
            icon=":material/check_circle:",
        )
        stages_col, links_col = st.columns([3, 2])
        with stages_col:
            st.dataframe(
                pd.DataFrame(last["stages"]),
                hide_index=True,
                width="stretch",
                column_config={"seconds": st.column_config.NumberColumn(format="%.2f s")},
            )
        with links_col:
            st.page_link(navigation.PROTOTYPES, label="See its prototypes", icon=":material/grid_view:")
            st.page_link(navigation.EXPLAIN, label="Explain a photo", icon=":material/image_search:")
        if last["problems"]:
            st.warning(f"{len(last['problems'])} file(s) or folder(s) were skipped; see the list below.")
        figures.problems_table(last["problems"], "Skipped while decomposing")
