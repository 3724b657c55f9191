"""The session's current run, with its model and its prototype head: what the Prototypes, Explain,
Intervene, Evaluate and Mistakes pages stand on (Compare reads a run's photos folder here too)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from pages.common import cache, jobs, navigation
from pages.common.figures import md
from pages.common.sidebar import runs_by_name
from pages.common.state import data_dir, default_data_dir, launch_data_dir, workspace
from protolib.backbones import Backbone, BackboneError
from protolib.config import DataFolderRefused
from protolib.data import BadImage, DataError
from protolib.data.features import Features
from protolib.method.head import PrototypeHead
from protolib.runs import Run, RunError


@dataclass
class Context:
    """What the run pages need: the run, its model and its prototype head."""

    run: Run
    backbone: Backbone
    head: PrototypeHead
    key: str  # identifies the run version and device in caches

    @property
    def class_names(self) -> list[str]:
        return self.run.class_names

    @property
    def name(self) -> str:
        return self.run.path.name if self.run.path else "run"

    @property
    def decomposed(self) -> list[int]:
        """The labels of the run's classes, in the run's order."""
        return [int(c) for c in self.head.classes]


def visible_runs() -> dict:
    """The runs this session may see (its own and the published ones), by name: the one list every page
    and run list reads (``sidebar.runs_by_name``)."""
    return runs_by_name()


def no_run_notice() -> None:
    st.info("There is no decomposition yet. Run one on the **Decompose** page first; it takes under a minute.")
    jobs.demo_offer()
    st.page_link(navigation.DECOMPOSE, label="Go to Decompose", icon=":material/arrow_forward:")


def run_key(path: Path, modified: float, device: str) -> str:
    """Names a run version on a device in caches and widget keys: a digest, since widget keys reach the
    browser and a private run's folder names the session."""
    return hashlib.sha256(f"{path}|{modified}|{device}".encode()).hexdigest()[:20]


def require_run() -> Context:
    """The session's run with its model and head, or a notice and a stop when there is none."""
    name = st.session_state.get("run")
    saved = runs_by_name().get(name) if name else None
    if saved is None:
        no_run_notice()
        st.stop()
    device = st.session_state.get("device", "cpu")
    try:
        modified = saved.modified
        run = cache.get_run(str(saved.path), modified)
        backbone = cache.get_backbone(run.manifest["backbone"], run.manifest.get("weights"), device)
        run.check_backbone(backbone)
    except (RunError, BackboneError, OSError, KeyError, TypeError, ValueError) as exc:
        st.error(md(workspace().redact(f"Run “{name}” cannot be used: {exc}")))
        st.stop()
    key = run_key(saved.path, modified, device)
    if backbone.note:
        st.warning(backbone.note, icon=":material/info:")
    if run.spatial_edit:  # only Intervene, Explain and the exported model compute it (protolib.method.spatial)
        st.caption(
            md(
                f"This run carries an edit in space ({run.spatial_edit.describe(backbone.class_names)}): Intervene, "
                "Explain and the downloaded model apply it; the other figures are of the model without it."
            )
        )
    return Context(run, backbone, cache.get_head(key, run, backbone), key)


def run_class_features(ctx: Context, position: int) -> Features | None:
    """The features of the run's training images of one class, or None with a message."""
    folder = ctx.run.manifest["classes"][position]["folder"]
    paths = tuple(ctx.run.manifest["images"].get(folder, []))
    missing = [p for p in paths if not Path(p).is_file()]
    if not paths or missing:
        st.warning(
            f"The training images of this class are no longer where the run found them "
            f"({len(missing)} of {len(paths)} missing, e.g. {missing[0] if missing else '-'}); "
            "its galleries cannot be drawn."
        )
        return None
    try:
        return cache.class_features(ctx.key, folder, ctx.backbone, paths)
    except (BadImage, DataError, OSError) as exc:
        st.warning(md(f"The images of this class cannot be read: {exc}"))
        return None


def run_data_of(run: Run) -> str:
    """The run's own data folder as its manifest records it (a probe's run: the probe's), resolved, or ""
    when it is gone or this session may not open it (another session's uploads)."""
    extra = [launch_data_dir()] if launch_data_dir() else []
    try:
        own = workspace().check_data_folder(run.manifest.get("data") or "", extra)
    except DataFolderRefused:
        return ""
    return str(own) if own.is_dir() else ""


def run_data(ctx: Context) -> tuple[str, str]:
    """(the folder a run's photos come from, a caption saying which): ``photos_folder`` of the session's run."""
    return photos_folder(ctx.run)


def photos_folder(run: Run) -> tuple[str, str]:
    """(the folder the photos of ``run`` come from, a caption saying which). A data folder the session chose in
    the sidebar (as ``--data`` on the command line) wins; the sidebar's default gives way to the run's own data
    folder (``run_data_of``), so a run is never measured on photos it was not made from by accident."""
    chosen = data_dir()
    if chosen and (st.session_state.get("data_dir") or "") != default_data_dir():
        return chosen, "the data folder chosen in the sidebar"
    own = run_data_of(run)
    if own:
        return own, "the run's own data folder"
    return chosen, "the sidebar's data folder (the run's own cannot be opened here)"
