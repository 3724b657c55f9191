"""Decompose: find k part prototypes per class of a trained classifier and save them as a run.

Read from the bottom: the page is the short script there. The sections are: 1 · images
(``common/image_sources.py``) with a linear probe for classes the model does not know
(``common/probe_form.py``); 2 · classes and settings (here); 3 · the run in the background
(``common/decomposition_job.py``); 4 · saved runs (here).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.common import cache, jobs, navigation, state, weights
from pages.common.decomposition_job import Settings, decompose, decomposition_job, last_decomposition
from pages.common.image_sources import SOURCE_DATA, Images, images_section
from pages.common.probe_form import probe_section
from pages.common.run_views import visible_run_rows
from pages.common.sidebar import is_published, runs_by_name, select_run
from protolib.backbones import DEFAULT_BACKBONE, Backbone, BackboneError
from protolib.method import DEFAULT_STRATEGY, MAX_K, STRATEGIES
from protolib.method.discovery import DEFAULT_DISCOVERY, DISCOVERIES, DISCOVERY_LABELS
from protolib.runs.names import auto_run_name

STRATEGY_TEXT = {
    "optimized": "optimized (default)",
    "paper": "paper objective",
    "uniform": "uniform",
    "proportional": "proportional to alpha",
}


# -- the model -----------------------------------------------------------------------------------
def chosen_backbone() -> Backbone:
    """The sidebar's backbone, or an error and a stop."""
    try:
        backbone = cache.get_backbone(
            st.session_state.get("backbone") or DEFAULT_BACKBONE, None, st.session_state.get("device") or "cpu"
        )
    except BackboneError as exc:
        st.error(f"The backbone cannot be loaded: {exc}", icon=":material/error:")
        st.stop()
    if backbone.note:
        st.warning(backbone.note, icon=":material/info:")
    return backbone


# -- 2. classes and settings ---------------------------------------------------------------------
def settings_section(backbone: Backbone, images: Images) -> tuple[Settings, bool]:
    """The classes and the decomposition's settings, and whether the run was asked for."""
    by_folder = {c.folder: c for c in images.classes}
    with st.container(border=True):
        st.markdown("##### 2 · Classes and settings")
        if by_folder:
            classes = state.kept(  # one choice per data folder: switching folders does not empty it
                st.multiselect,
                "Classes",
                f"dec_classes|{images.data}",
                list(by_folder) if len(by_folder) <= 12 else [],
                options=list(by_folder),
                format_func=lambda f: f"{by_folder[f].name} · {by_folder[f].n_images} images",
                placeholder="Type to search classes by name",
            )
        else:
            classes = st.multiselect("Classes", [], disabled=True, placeholder="No class folders found")
        k_col, per_class_col, strategy_col, random_state_col = st.columns(4)
        with k_col:
            k = state.kept(st.slider, "Prototypes per class (k)", "dec_k", 3, min_value=1, max_value=MAX_K)
        with per_class_col:
            per_class = state.kept(
                st.number_input,
                "Images per class",
                "dec_per_class",
                60,
                min_value=1,
                max_value=5000,
                step=10,
                help="The first N training images of each class (sorted by file name, so runs are reproducible).",
            )
        with strategy_col:
            strategy = state.kept(
                st.selectbox,
                "Refinement",
                "dec_strategy",
                DEFAULT_STRATEGY,
                options=list(STRATEGIES),
                format_func=lambda s: STRATEGY_TEXT.get(s, s),
                help="How the residual of the head row is shared among the prototypes: **optimized** keeps each "
                "prototype's heatmap best on held-out images; **paper** is the paper's objective (L-BFGS); **uniform** "
                "splits it evenly; **proportional** in proportion to alpha. Every strategy is computed (Evaluate "
                "compares them); this one drives the run's head.",
            )
        with random_state_col:
            random_state = state.kept(
                st.number_input,
                "NMF seed",
                "dec_seed",
                0,
                min_value=0,
                max_value=2**31 - 1,
                step=1,
                help="random_state: the seed of the NMF initialisation",
            )
        discovery_col, _ = st.columns([2, 2])
        with discovery_col:
            discovery = state.kept(
                st.selectbox,
                "Discovery",
                "dec_discovery",
                DEFAULT_DISCOVERY,
                options=list(DISCOVERIES),
                format_func=lambda d: DISCOVERY_LABELS.get(d, d),
                help="How the parts are found. **The paper's NMF** factorises every cell of the class's photos; "
                "**evidence-weighted NMF** weights each cell by its share of the class's evidence (f · v), so the cells "
                "that make the logit decide the parts; **evidence-weighted NMF of unit-length cells** factorises the "
                "cells' directions, weighted the same way, and draws its part maps with loudness damped "
                "(‖f‖^0.5 · cos): the part maps closest to the true parts on the ground-truth parts benchmark, but on "
                "real photos its parts often collapse onto the same few cells (Evaluate marks them dead or duplicate; "
                "README). "
                "Scaling, refinement and the exact head are the same for all three: the logits do not change.",
            )

        automatic = auto_run_name(backbone.name, int(k), strategy, len(classes))
        state.follow_automatic("dec_name", automatic)
        name_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
        with name_col:
            name = state.kept(
                st.text_input,
                "Run name",
                "dec_name",
                automatic,
                help="Saved with your runs: only your workspace sees it until you publish it (sidebar).",
            )
        with button_col:
            start = st.button(
                "Run decomposition",
                type="primary",
                icon=":material/play_arrow:",
                disabled=not classes,
                width="stretch",
            )
        weights.cache_panel()
    return Settings(list(classes), int(k), int(per_class), strategy, int(random_state), name or automatic, discovery), start


# -- 4. saved runs -------------------------------------------------------------------------------
def saved_runs_section() -> None:
    """The runs this session sees (its own, then the published ones) as a table, and any of them reloaded
    as the current one."""
    st.subheader("Saved runs")
    runs = runs_by_name()
    if not runs:
        st.caption("No run yet: neither yours nor a published one.")
        return
    published = {name for name, run in runs.items() if is_published(run)}
    st.dataframe(
        pd.DataFrame(visible_run_rows(runs, published)),
        hide_index=True,
        width="stretch",
        column_config={"seconds": st.column_config.NumberColumn(format="%.1f s")},
    )
    pick_col, load_col = st.columns([3, 1], vertical_alignment="bottom")
    with pick_col:
        chosen = state.kept(
            st.selectbox, "Run to load", "dec_load", st.session_state.get("run") or next(iter(runs)), options=list(runs)
        )
    with load_col:
        if st.button("Load run", icon=":material/upload_file:", width="stretch"):
            select_run(chosen)
            st.rerun()
    st.caption(
        "Your runs are private to your workspace (your private link, or your sign-in behind a team's proxy); "
        "**Publish this run** in the sidebar shares one with everyone using this server."
    )


# -- the page --------------------------------------------------------------------------------------
navigation.entry()
st.title("Decompose")
st.caption(
    "Find *k* part prototypes per class in the model's features (NMF), scale them to the class's head row "
    "and refine them so that they sum to it exactly: the same model, now explained by parts."
)
jobs.demo_offer()
backbone = chosen_backbone()
images = images_section(backbone)
if images.source == SOURCE_DATA:
    probe_section(images.data, expanded=images.unknown_classes or bool(st.session_state.get("last_probe") or jobs.pending("probe")))
settings, start = settings_section(backbone, images)
if start:
    decompose(backbone, images.data, settings)
decomposition_job()
last_decomposition()
saved_runs_section()
