"""Pretrained weights fetched with consent from the sidebar, and the feature cache shown on Decompose.

Drawing only: ``protolib.backbones.download`` fetches and checks, ``protolib.data.feature_cache`` measures and
clears.
"""

from __future__ import annotations

import html

import streamlit as st

from protolib import config
from protolib.backbones import BackboneError, BackboneSpec
from protolib.backbones.download import fetch_weights, weights_file
from protolib.data import feature_cache


def download_weights(spec: BackboneSpec) -> None:
    """What is missing, where it would come from and go, and a "Download weights (size)" button with progress."""
    try:
        source = weights_file(spec.name)
    except (BackboneError, ValueError) as exc:  # no file to fetch, or a malformed mirror setting
        st.info(f"No weights for {spec.name} on this machine. {spec.weights_hint}", icon=":material/download:")
        st.error(html.escape(str(exc)), icon=":material/error:")
        return
    st.info(f"No weights for {spec.name} on this machine.", icon=":material/download:")
    st.caption(f"From `{source.url}` into `{source.dest.parent}`, checked against its sha256.")
    size = f" ({source.size_mb:.1f} MB)" if source.size_mb else ""
    if st.button(f"Download weights{size}", key="download_weights", icon=":material/download:", width="stretch"):
        bar = st.progress(0.0, text="Downloading…")

        def progress(done: int, total: int) -> None:
            of = f" of {total / 1e6:.1f}" if total else ""
            bar.progress(min(1.0, done / total) if total else 0.0, text=f"{done / 1e6:.1f}{of} MB")

        try:
            path = fetch_weights(spec.name, progress)
        except BackboneError as exc:
            st.session_state["weights_error"] = str(exc)
        else:
            st.session_state.pop("weights_error", None)
            st.session_state["weights_done"] = f"Checked and saved: {path.name}"
            st.rerun()
    if st.session_state.get("weights_error"):
        st.error(html.escape(st.session_state["weights_error"]), icon=":material/error:")


def downloaded_note() -> None:
    """Once, after a download: which file was checked and saved."""
    done = st.session_state.pop("weights_done", None)
    if done:
        st.success(html.escape(done), icon=":material/check:")


def cache_panel() -> None:
    """The feature cache's size, limit and location, and a button to clear it (it refills as runs need it)."""
    try:
        limit = f"{config.cache_limit_bytes() / 1024**2:,.0f} MB"
    except ValueError as exc:
        limit = f"invalid: {exc}"
    entries, size = feature_cache.usage()
    st.caption(
        f"Feature cache: {size / 1024**2:,.1f} MB in {entries} entries (limit {limit}, float16, least recently "
        f"used removed first) at `{config.cache_dir()}`."
    )
    if st.button("Clear the cache", key="clear_cache", icon=":material/delete_sweep:", disabled=not entries):
        removed = feature_cache.clear()
        st.toast(f"Removed {removed} cached feature files.")
        st.rerun()
