"""The shortcut benchmark in the app (``protolib.benchmarks.shortcut``): the share of each prototype on the
background where the data folder has object masks, the rule that switches background prototypes off, the
groups of ``groups.csv``, and the one-click demo of a model that leans on the background."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from pages.common import jobs
from pages.common.edits import set_scales
from pages.common.run_context import Context
from pages.common.sidebar import select_run_path
from pages.common.space_edit import space_key
from pages.common.state import workspace
from protolib.backbones import BackboneError
from protolib.benchmarks import mask_rule, shortcut_demo
from protolib.data import DataError
from protolib.data.synthetic_shortcut import read_groups
from protolib.runs import RunError


@st.cache_data(ttl=60, show_spinner=False)
def groups_table(data: str) -> dict:
    """``data/groups.csv`` (file -> its row: split, class, background, group), {} when there is none."""
    if not data:
        return {}
    try:
        return read_groups(Path(data))
    except (OSError, KeyError, ValueError):
        return {}


@st.cache_data(max_entries=8, show_spinner="Measuring how much of each prototype lies on the background…")
def background_shares(key: str, data: str, _ctx: Context) -> np.ndarray | None:
    """(C, k) the share of each prototype's positive heatmap on the background of a few masked photos of its
    class, when the data folder has object masks (the shortcut benchmark's layout); None otherwise."""
    if not groups_table(data):
        return None
    try:
        return mask_rule.background_fractions(_ctx.backbone, _ctx.run, data).numpy()
    except (DataError, BackboneError, RunError, OSError, KeyError, ValueError):
        return None


def mask_rule_scales(ctx: Context, data: str) -> torch.Tensor | None:
    """(C, k) the shortcut benchmark's mask rule on this run, 0 = a background prototype; None (and the reason kept
    for the page) when the data folder's masks cannot be read."""
    try:
        scales = mask_rule.mask_rule_scales(ctx.backbone, ctx.run, data)
    except (DataError, BackboneError, RunError, OSError, KeyError, ValueError) as exc:
        st.session_state["iv_background_error"] = workspace().redact(f"The background prototypes cannot be found: {exc}")
        return None
    st.session_state.pop("iv_background_error", None)
    return scales


def switch_off_background(ctx: Context, data: str) -> None:
    """Switch off every prototype the shortcut benchmark's mask rule calls background."""
    scales = mask_rule_scales(ctx, data)
    if scales is not None:
        set_scales(ctx, [tuple(w) for w in (scales == 0).nonzero().tolist()], 0.0)


def keep_object_parts(ctx: Context, data: str) -> None:
    """Tick "keep only where these parts are" for every prototype the mask rule does not call background (the
    object parts): each photo then pools only the cells where the object parts are most present."""
    scales = mask_rule_scales(ctx, data)
    if scales is not None:
        for c, i in (scales != 0).nonzero().tolist():
            st.session_state[space_key(ctx, ctx.decomposed[c], i, "keep")] = True


def shortcut_demo_offer() -> None:
    """One click builds (or opens, when built already) the shortcut benchmark's data and run, published for
    everyone: a model that leans on the background, to try to repair here."""
    with st.expander("Demo: a model that looks at the background", icon=":material/rocket_launch:"):
        st.caption(
            "Generated photos whose background gives the class away in training (95 % of the photos) but not in the "
            "held-out split, where every (class, background) group is equally common; a small CNN learns the "
            "shortcut. Open it, switch off every background prototype and read the worst group before and after (it "
            "does not repair the model: the background is in every part); then reset and keep only where the object "
            "parts are (an edit of the pooling, no weight changed), and read it again. "
            "Built once per server (about a minute on a CPU) and shared with everyone."
        )
        if st.button("Open the shortcut demo", icon=":material/play_arrow:", key="iv_shortcut_demo"):
            open_shortcut_demo()


def open_shortcut_demo() -> None:
    with st.status("Preparing the shortcut demo…", expanded=True) as status:
        started = time.perf_counter()
        try:
            with jobs.queued("shortcut demo"):
                run_path, data = shortcut_demo.build_shortcut_demo(workspace().runs_root, log=st.write)
        except (DataError, BackboneError, RunError, ValueError, OSError) as exc:
            status.update(label="The shortcut demo could not be built", state="error")
            st.error(workspace().redact(str(exc)), icon=":material/error:")
            return
        status.update(label=f"Shortcut demo ready in {time.perf_counter() - started:.0f} s", state="complete")
    select_run_path(Path(run_path))
    st.session_state["data_dir"] = str(data)
    st.rerun()
