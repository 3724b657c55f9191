"""The sidebar every page shares: the backbone (with weights fetched on consent), the device, the data folder,
the current run and its publishing, and the session's workspace (its jobs, its private link, forgetting it).

``runs_by_name`` is the one list of runs every page and run list reads: the session's own runs and
the published ones, never another session's.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st
import torch

from pages.common.figures import md
from pages.common.run_views import probe_choices, run_caption
from pages.common.state import by_proxy, data_refusal, default_data_dir, forget_me, kept, workspace
from pages.common.weights import download_weights, downloaded_note
from protolib.backbones import DEFAULT_BACKBONE, BackboneError, available_backbones
from protolib.backbones.probe_models import probe_folder, read_probe_manifest
from protolib.background import BACKGROUND
from protolib.runs import RunError
from protolib.runs.listing import SavedRun
from protolib.workspace.publishing import publish


def runs_by_name() -> dict[str, SavedRun]:
    """The runs this session may see, by the name each is shown under: its own (newest first), then the
    published ones (the demo among them). Damaged runs are listed, with why (``SavedRun.problem``)."""
    return workspace().visible_runs()


def is_published(run: SavedRun) -> bool:
    """Whether everyone sees ``run`` (it is not one of this session's private runs)."""
    return not workspace().owns(run.path)


def probe_roots() -> list[Path]:
    """The folders whose probes this session may use: its own, the published ones, the runs folder's."""
    ws = workspace()
    return [ws.private_runs, ws.shared_runs, ws.runs_root]


def _probe_exists(name: str) -> bool:
    try:
        read_probe_manifest(probe_folder(name) or Path(name))
    except BackboneError:
        return False
    return True


def backbone_choices() -> dict[str, str]:
    """Backbone name -> description: the registry's, the probes in the runs folder, and the session's
    probe when it lives elsewhere (a run made from a probe outside the runs folder)."""
    choices = {s.name: s.label for s in available_backbones()}  # the offline-ready ones first
    for root in probe_roots():
        choices |= {name: text for name, text in probe_choices(root).items() if name not in choices}
    current = st.session_state.get("backbone") or ""
    probe = probe_folder(current)
    if probe is not None and current not in choices and _probe_exists(current):
        choices[current] = f"Probe “{probe.name}” (of the current run)"
    return choices


def _follow_run_backbone() -> None:
    """Selecting a run selects the backbone it was made from (a probe's too, if its folder is still there)."""
    run = runs_by_name().get(st.session_state.get("run"))
    name = ((run.manifest if run else None) or {}).get("backbone") or ""
    registry = {s.name for s in available_backbones()}
    if name in registry or (probe_folder(name) is not None and _probe_exists(name)):
        st.session_state["backbone"] = name


def select_run(name: str) -> None:
    """Make ``name`` the session's run (applied before the sidebar is drawn on the next run)."""
    st.session_state["run"] = name
    _follow_run_backbone()


def select_run_path(path: Path) -> None:
    """Make the run saved at ``path`` the session's run, under the name the session sees it by."""
    found = next((key for key, run in runs_by_name().items() if run.path == Path(path)), None)
    if found is not None:
        select_run(found)


def publish_current(name: str, run: SavedRun) -> None:
    """Publish one of the session's runs (it moves to the shared runs) and keep it selected."""
    try:
        path = publish(workspace(), run.path)
    except (RunError, OSError) as exc:
        st.session_state["publish_error"] = workspace().redact(f"“{name}” could not be published: {exc}")
        return
    st.session_state.pop("publish_error", None)
    select_run_path(path)


def sidebar() -> None:
    specs = backbone_choices()
    with st.sidebar:
        st.markdown("## :material/category: protoscope")
        st.caption("A trained classifier, rewritten exactly as a sum of part prototypes.")
        st.markdown("#### Model")
        kept(
            st.selectbox,
            "Backbone",
            "backbone",
            DEFAULT_BACKBONE,
            options=list(specs),
            format_func=lambda n: specs.get(n, n),
            help="The trained classifier to decompose; linear probes saved in the runs folder are listed too "
            "(fit one on **Decompose**).",
        )
        missing = next((s for s in available_backbones() if s.name == st.session_state.get("backbone") and not s.ready()), None)
        if missing is not None:
            download_weights(missing)
        downloaded_note()
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        kept(st.selectbox, "Device", "device", devices[-1], options=devices, help="Where the backbone runs.")
        st.markdown("#### Data")
        kept(
            st.text_input,
            "Data folder",
            "data_dir",
            default_data_dir(),
            help="A folder with train/<class>/<images> (and val/ for evaluation); class folders are ImageNet "
            "wnids or listed in classes.csv, or any names once a linear probe is fit on them (**Decompose**). "
            "Only the sample photos, the server's data folders and your own uploads can be opened.",
        )
        refusal = data_refusal()
        if refusal:
            st.error(refusal, icon=":material/block:")
        st.markdown("#### Run")
        run_choice(runs_by_name())
        workspace_note()


def run_choice(runs: dict[str, SavedRun]) -> None:
    """The current run, and one line about it."""
    if not runs:
        st.caption("No run yet: make one on **Decompose**.")
        st.session_state["run"] = None
        return
    name = kept(
        st.selectbox,
        "Run",
        "run",
        next(iter(runs)),
        options=list(runs),
        on_change=_follow_run_backbone,
        help="A saved decomposition; the Prototypes, Explain, Intervene and Evaluate pages show it.",
    )
    run = runs[name]
    if run.manifest is None:
        st.caption(f"Damaged run: {md(workspace().redact(run.problem))}")
        return
    if run.manifest.get("classes"):
        st.caption(md(run_caption(run.manifest)))
    if run.manifest.get("intervention"):
        st.caption(f"Edited head: {md(run.manifest['intervention'])}")
    if is_published(run):
        st.caption(":material/public: Published: everyone using this server sees it.")
    else:
        st.caption(":material/lock: Private: only your workspace sees it. Publish it to share it with everyone.")
        st.button(
            "Publish this run",
            icon=":material/public:",
            key="publish_run",
            on_click=publish_current,
            args=(name, run),
            help="Moves the run to the shared runs: everyone on this server then sees it, read-only.",
        )
    if st.session_state.get("publish_error"):
        st.error(st.session_state["publish_error"])


def workspace_note() -> None:
    """Whose workspace this is, the jobs still running for it, and how to forget it."""
    st.markdown("#### Your workspace")
    for job in BACKGROUND.active(workspace().session):
        st.caption(f":material/hourglass_top: Your {job.what} is {job.state}; its page shows its progress.")
    if by_proxy():
        st.caption(":material/badge: Your workspace belongs to the name you signed in with: it is the same on any device.")
    else:
        st.caption(
            ":material/key: **This address is your private key to your workspace**: anyone with it sees your runs "
            "and uploads. Bookmark it to come back (a reload, another tab, the next day); share a run by publishing "
            "it, never by sharing the address."
        )
    if st.session_state.pop("forgotten", False):
        st.success(
            "Your runs and uploads were deleted from this server"
            + ("." if by_proxy() else "; the old address opens nothing any more.")
        )
    with st.popover("Forget me on this server", icon=":material/delete_forever:", width="stretch"):
        st.caption(
            "Deletes your private runs, probes and uploads from this server now, and gives this page a new private "
            "address (the old one then opens an empty workspace). Published runs stay."
        )
        st.button("Delete my workspace", type="primary", key="forget_me", on_click=forget_me)
