"""The intervention on Intervene, kept in the session: one scale per prototype of the run. The per-class
switches and sliders, the table of every prototype and the background rule all edit the same numbers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st
import torch

from pages.common.edit_views import scale_matrix
from pages.common.run_context import Context


def edit_key(path: Path | None) -> str:
    """Names a run's edits in session keys: its folder only, so that saving its labels (a new version of the
    same run) keeps the edits; a digest, since widget keys reach the browser."""
    return hashlib.sha256(f"edit|{path}".encode()).hexdigest()[:16]


def setting_keys(ctx: Context, label: int, i: int) -> tuple[str, str]:
    """The session keys of prototype ``i`` of class ``label``: switched on, and its scale."""
    edit = edit_key(ctx.run.path)
    return f"iv.{edit}.{label}.{i}.on", f"iv.{edit}.{label}.{i}.scale"


def reset_all(ctx: Context) -> None:
    set_scales(ctx, [(c, i) for c in range(len(ctx.decomposed)) for i in range(ctx.run.k)], 1.0)
    prefix = f"iv.{edit_key(ctx.run.path)}."  # and every "leave out where" and "keep only where" (space_edit)
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(prefix) and k.endswith((".space", ".keep"))]:
        st.session_state[key] = False


def set_scales(ctx: Context, targets, value: float) -> None:
    """Scale the prototypes ``targets`` ((class position, prototype) pairs) to ``value``: 0 switches them off
    (their sliders keep their value for when they are switched back on)."""
    state = st.session_state
    for c, i in targets:
        on, scale = setting_keys(ctx, ctx.decomposed[c], i)
        state[on] = value != 0
        if value != 0:
            state[scale] = float(value)


def current_scale(ctx: Context) -> torch.Tensor:
    """The (C, k) intervention on every class of the run, as the switches, sliders and the table set it."""
    state = st.session_state
    settings = {}
    for c, label in enumerate(ctx.decomposed):
        for i in range(ctx.run.k):
            on, scale = setting_keys(ctx, label, i)
            value = float(state.get(scale, 1.0)) if state.get(on, True) else 0.0
            if value != 1.0:
                settings[(c, i)] = value
    return scale_matrix(len(ctx.decomposed), ctx.run.k, settings)


def carry_edits(old: str, new: str) -> None:
    """The session's edits of one run (switches, scales, selection) carried over to its labelled copy."""
    state = st.session_state
    for key in [k for k in state if isinstance(k, str)]:
        for prefix in ("iv.", "iv_sel.", "iv_to."):
            if key.startswith(f"{prefix}{old}"):
                state[f"{prefix}{new}{key[len(prefix) + len(old) :]}"] = state[key]
