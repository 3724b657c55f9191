"""Intervene's last section: the edited head (and any edit in space) saved as a new run, which can be opened,
and downloaded as a model that runs without this app (TorchScript)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
import torch

from pages.common import figures
from pages.common.edit_views import describe_scale
from pages.common.edits import edit_key
from pages.common.run_context import Context
from pages.common.sidebar import select_run
from pages.common.state import kept, workspace
from protolib.export import exported_bytes, model_from_run
from protolib.runs import RunError, load_run, save_run
from protolib.runs.names import safe_name


def save_section(ctx: Context, scale: torch.Tensor, spatial=None) -> None:
    """The edited head (and the edit in space, a change of the pooling) saved as a new run, which can then be
    opened, and downloaded as a model that runs without this app (TorchScript: ``torch.jit.load``)."""
    state = st.session_state
    st.markdown("##### Save the edited model")
    note = describe_scale(scale, ctx.class_names)
    space_note = spatial.describe(ctx.backbone.class_names) if spatial else "no change"
    name_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
    with name_col:
        name = kept(st.text_input, "New run name", f"iv_name.{ctx.key}", f"{ctx.name}-edited")
    with button_col:
        unchanged = note == "no change" and spatial == ctx.run.spatial_edit
        clicked = st.button("Save as a new run", icon=":material/save:", disabled=unchanged, width="stretch")
    st.caption(f"Intervention: {figures.md(note)}" + (" · the prototypes' names go with it" if ctx.run.prototype_names else ""))
    if spatial or ctx.run.spatial_edit:
        st.caption(f"Edit in space (the model's pooling, not its head): {figures.md(space_note)}")
    if clicked:
        ws = workspace()
        try:
            edited = ctx.run.with_scale(scale, note).with_spatial_edit(spatial, space_note)
            path = save_run(edited, ws.new_run_path(name))
        except (RunError, ValueError, OSError) as exc:
            st.error(ws.redact(f"Could not save: {exc}"))
            return
        state["iv_saved"], state["iv_saved_path"] = path.name, str(path)
    if state.get("iv_saved"):
        saved = state["iv_saved"]
        st.success(f"Saved as run “{saved}”.", icon=":material/check_circle:")
        open_col, download_col = st.columns(2)
        if open_col.button(f"Open “{saved}”"):
            state.pop("iv_saved")
            select_run(saved)
            st.rerun(scope="app")
        download_col.download_button(
            "Download the model (TorchScript)",
            data=exporter(state["iv_saved_path"], ctx),
            file_name=f"{safe_name(saved)}.pt",
            mime="application/octet-stream",
            icon=":material/download:",
            on_click="ignore",
            key=f"iv_download.{edit_key(Path(state['iv_saved_path']))}",
            help='The backbone and the edited prototype head in one file: torch.jit.load("model.pt")(images) '
            "gives the logits, with no protoscope installed (class names, labels and preprocessing inside).",
        )


def exporter(path: str, ctx: Context):
    """The download's data, made when the button is clicked: the saved run exported on the run's model."""
    backbone = ctx.backbone

    def make() -> bytes:
        return exported_bytes(model_from_run(load_run(path, backbone), backbone))

    return make
