"""The seam between Streamlit and protolib: cached loaders, the shared sidebar, and the widgets that
several pages draw.

Caching: models, runs and feature tensors are read-only and shared between sessions, so they sit in
``st.cache_resource``; small per-image results in ``st.cache_data``; decompositions on disk (runs/)
and features in protolib's disk cache. Everything a user chooses lives in ``st.session_state``:
nothing per-user is kept in module globals or in a resource cache.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch

from protolib import appstate
from protolib.backbones import DEFAULT_BACKBONE, Backbone, BackboneError, available_backbones, load_backbone
from protolib.data import BadImage, DataError, class_folders, load_image
from protolib.explain import model_input, prototype_hex
from protolib.features import Features, extract_features
from protolib.head import PrototypeHead
from protolib.metrics import SplitFeatures, split_features
from protolib.runs import Run, RunError, list_runs, load_run

DECOMPOSE_PAGE = "pages/decompose.py"
SOURCE_DATA, SOURCE_UPLOAD = "Data folder", "Upload"


# -- entry ---------------------------------------------------------------------------------------
def entry() -> None:
    """Call first on every page: make sure the page runs inside app.py's navigation.

    Streamlit sees the ``pages/`` folder and runs the very first script run of a fresh server
    process (and every run under streamlit.testing's AppTest) in its legacy folder mode, which
    executes a page file without app.py: no sidebar, no page config. st.navigation turns that mode
    off, so one rerun is enough to get the whole app.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


# -- per-session choices ---------------------------------------------------------------------------
def kept(
    widget: Callable,
    label: str | None,
    name: str,
    default,
    options: Sequence | None = None,
    on_change: Callable | None = None,
    **kwargs,
):
    """Draw ``widget`` whose value is the session's choice ``name``, kept across page switches.

    Streamlit forgets a widget's state when a page does not draw it, so the choice lives in
    ``st.session_state[name]`` and seeds the widget (key ``w.<name>``) on every run; a value that
    is no longer among ``options`` falls back to ``default``.
    """
    state = st.session_state
    wkey = f"w.{name}"
    value = state.get(name, default)
    if options is not None:
        options = list(options)
        if isinstance(value, list):
            value = [v for v in value if v in options]
        elif value not in options:
            value = default if default in options else (options[0] if options else None)
    state[name] = value
    state[wkey] = value

    def changed():
        state[name] = state[wkey]
        if on_change is not None:
            on_change()

    args = [] if label is None else [label]
    if options is not None:
        args.append(options)
    return widget(*args, key=wkey, on_change=changed, **kwargs)


def session_id() -> str:
    """A random id for this browser session (names its upload folder)."""
    return st.session_state.setdefault("session_id", uuid.uuid4().hex[:12])


def upload_root() -> Path:
    """This session's own data folder for uploaded images."""
    return Path(tempfile.gettempdir()) / "protoscope-uploads" / session_id()


def dataset_root() -> Path:
    """This session's own folder for uploaded zips of image folders (one data folder per zip)."""
    return Path(tempfile.gettempdir()) / "protoscope-datasets" / session_id()


def default_data_dir() -> str:
    found = appstate.default_data_dir(sys.argv[1:])
    return str(found) if found else ""


# -- cached resources (shared, read-only) --------------------------------------------------------
@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def get_backbone(name: str, weights: str | None, device: str) -> Backbone:
    return load_backbone(name, weights, device)


@st.cache_resource(max_entries=16, show_spinner=False)
def get_run(path: str, stamp: float) -> Run:
    """A saved run (``stamp``, the manifest's mtime, makes a rewritten run a new entry)."""
    return load_run(path)


@st.cache_resource(max_entries=16, show_spinner=False)
def get_head(run_key: str, _run: Run, _backbone: Backbone) -> PrototypeHead:
    return _run.head(_backbone)


@st.cache_resource(max_entries=12, show_spinner="Reading the class's features…")
def class_features(run_key: str, folder: str, _backbone: Backbone, _paths: tuple[str, ...]) -> Features:
    """Features of a run's training images of one class (from protolib's disk cache after the run)."""
    return extract_features(_backbone, list(_paths))


@st.cache_resource(max_entries=2, show_spinner="Reading held-out features…")
def split_features_cached(
    backbone_key: str, data: str, split: str, per_class: int, classes: tuple[str, ...] | None, _backbone
) -> SplitFeatures:
    """Held-out features, shared between sessions (after ``val_features`` filled the disk cache)."""
    return split_features(
        _backbone, data, split, images_per_class=per_class or None, classes=list(classes) if classes else None
    )


@st.cache_data(max_entries=600, show_spinner=False)
def shown_image(path: str, preprocessing: str, _backbone: Backbone) -> np.ndarray:
    """An image as the model sees it (after resize and crop), uint8."""
    return _backbone.preprocessing.display_transform()(load_image(path)).permute(1, 2, 0).numpy()


@st.cache_data(max_entries=64, show_spinner=False)
def image_features(backbone_key: str, source: str | bytes, name: str, _backbone: Backbone, stamp: float = 0.0):
    """(features (H, W, D), the image as the model sees it) of a file path (``stamp``: its mtime)
    or uploaded bytes."""
    pil = appstate.read_upload(name, source) if isinstance(source, bytes) else load_image(source)
    x, shown = model_input(_backbone, pil)
    feats, _ = _backbone(x.to(_backbone.device))
    return feats[0].float().cpu().numpy(), shown


@st.cache_data(ttl=60, show_spinner=False)
def folder_classes(
    data: str, split: str, backbone_key: str, _labels, _wnids, version: int = 0
) -> tuple[list[dict], list]:
    """The class folders of ``data/split`` the model knows, with their image counts, and problems
    (``version`` changes when the caller knows the folder changed, e.g. after an upload)."""
    classes, problems = class_folders(data, split, _labels, _wnids)
    root = Path(data) / split
    rows = []
    for c in classes:
        n = sum(1 for p in (root / c.folder).iterdir() if p.suffix.lower() in appstate.IMAGE_SUFFIXES)
        rows.append({"folder": c.folder, "label": c.label, "name": c.name, "n_images": n})
    return rows, problems


def backbone_key(backbone: Backbone) -> str:
    return f"{backbone.name}|{backbone.fingerprint}|{backbone.device}"


# -- the shared sidebar ----------------------------------------------------------------------------
def _run_paths() -> dict[str, Path]:
    return {p.name: p for p in list_runs(appstate.runs_dir())}


def backbone_choices() -> dict[str, str]:
    """Backbone name -> description: the registry's, the probes in the runs folder, and the session's
    probe when it lives elsewhere (a run made from a probe outside the runs folder)."""
    choices = {s.name: s.description for s in available_backbones()} | appstate.probe_choices(appstate.runs_dir())
    current = st.session_state.get("backbone") or ""
    if current.startswith(appstate.PROBE_PREFIX) and current not in choices:
        folder = Path(current.removeprefix(appstate.PROBE_PREFIX))
        if appstate.read_probe(folder) is not None:
            choices[current] = f"Probe “{folder.name}” ({folder.parent})"
    return choices


def _sync_backbone_to_run():
    """Selecting a run selects the backbone it was made from (a probe's too, if its folder is still there)."""
    path = _run_paths().get(st.session_state.get("run"))
    manifest = appstate.read_manifest(path) if path else None
    name = (manifest or {}).get("backbone") or ""
    probe_here = name.startswith(appstate.PROBE_PREFIX) and appstate.read_probe(name.removeprefix(appstate.PROBE_PREFIX))
    if name in {s.name for s in available_backbones()} or probe_here:
        st.session_state["backbone"] = name


def select_run(name: str) -> None:
    """Make ``name`` the session's run (applied before the sidebar is drawn on the next run)."""
    st.session_state["run"] = name
    _sync_backbone_to_run()


def sidebar() -> None:
    state = st.session_state
    specs = backbone_choices()
    with st.sidebar:
        st.markdown("## :material/category: protoscope")
        st.caption("A trained classifier, rewritten exactly as a sum of part prototypes.")
        st.markdown("#### Model")
        kept(
            st.selectbox, "Backbone", "backbone", DEFAULT_BACKBONE, options=list(specs),
            format_func=lambda n: specs.get(n, n),
            help="The trained classifier to decompose; linear probes saved in the runs folder are listed too "
            "(fit one on **Decompose**).",
        )
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        kept(st.selectbox, "Device", "device", devices[-1], options=devices, help="Where the backbone runs.")
        st.markdown("#### Data")
        kept(
            st.text_input, "Data folder", "data_dir", default_data_dir(),
            help="A folder with train/<class>/<images> (and val/ for evaluation); class folders are ImageNet "
            "wnids or listed in classes.csv, or any names once a linear probe is fit on them (**Decompose**).",
        )
        st.markdown("#### Run")
        runs = _run_paths()
        if not runs:
            st.caption("No run yet: make one on **Decompose**.")
            state["run"] = None
            return
        kept(
            st.selectbox, "Run", "run", next(iter(runs)), options=list(runs), on_change=_sync_backbone_to_run,
            help="A saved decomposition; the Prototypes, Explain, Intervene and Evaluate pages show it.",
        )
        manifest = appstate.read_manifest(runs[state["run"]]) or {}
        names = [c["name"] for c in manifest.get("classes", [])]
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            st.caption(
                f"{appstate.short_backbone(manifest.get('backbone') or '?')} · k = {manifest.get('k')} · "
                f"{manifest.get('strategy')} · "
                f"{len(names)} classes: {shown}"
            )
        if manifest.get("intervention"):
            st.caption(f"Edited head: {manifest['intervention']}")


# -- the current run -----------------------------------------------------------------------------
@dataclass
class Context:
    """What the run pages need: the run, its model and its prototype head."""

    run: Run
    backbone: Backbone
    head: PrototypeHead
    key: str  # identifies the run version and device in caches

    @property
    def labels(self) -> list[str]:
        return self.backbone.labels

    @property
    def class_names(self) -> list[str]:
        return self.run.class_names

    @property
    def name(self) -> str:
        return self.run.path.name if self.run.path else "run"


def no_run_notice() -> None:
    st.info("There is no decomposition yet. Run one on the **Decompose** page first; it takes under a minute.")
    st.page_link(DECOMPOSE_PAGE, label="Go to Decompose", icon=":material/arrow_forward:")


def require_run() -> Context:
    """The session's run with its model and head, or a notice and a stop when there is none."""
    name = st.session_state.get("run")
    path = _run_paths().get(name) if name else None
    if path is None:
        no_run_notice()
        st.stop()
    device = st.session_state.get("device", "cpu")
    try:
        stamp = (path / "manifest.json").stat().st_mtime
        run = get_run(str(path), stamp)
        backbone = get_backbone(run.manifest["backbone"], run.manifest.get("weights"), device)
        run.check_backbone(backbone)
    except (RunError, BackboneError, OSError) as exc:
        st.error(f"Run “{name}” cannot be used: {exc}")
        st.stop()
    key = f"{path}|{stamp}|{device}"
    if backbone.note:
        st.warning(backbone.note, icon=":material/info:")
    return Context(run, backbone, get_head(key, run, backbone), key)


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
        return class_features(ctx.key, folder, ctx.backbone, paths)
    except (BadImage, DataError, OSError) as exc:
        st.warning(f"The images of this class cannot be read: {exc}")
        return None


# -- small drawing helpers -------------------------------------------------------------------------
def chip(i: int, text: str | None = None) -> str:
    """An HTML colour swatch with the prototype's name."""
    label = text if text is not None else f"P{i + 1}"
    return (
        f'<span style="display:inline-flex;align-items:center;gap:.35em;margin-right:.9em">'
        f'<span style="width:.95em;height:.95em;border-radius:3px;background:{prototype_hex(i)};'
        f'display:inline-block;border:1px solid rgba(0,0,0,.15)"></span>{label}</span>'
    )


def legend(k: int, prefix: str = "") -> None:
    st.markdown(prefix + "".join(chip(i, f"Prototype {i + 1}") for i in range(k)), unsafe_allow_html=True)


def waterfall(contributions: torch.Tensor, bias: float, title: str) -> go.Figure:
    """Per-prototype contributions + bias = logit, as a plotly waterfall."""
    k = len(contributions)
    names = [f'<span style="color:{prototype_hex(i)}"><b>P{i + 1}</b></span>' for i in range(k)]
    values = [bias] + [float(c) for c in contributions]
    total = sum(values)
    fig = go.Figure(
        go.Waterfall(
            x=["bias", *names, "logit"],
            measure=["relative"] * (k + 1) + ["total"],
            y=[*values, total],
            text=[f"{v:+.2f}" for v in values] + [f"{total:.2f}"],
            textposition="outside",
            connector={"line": {"color": "rgba(120,120,120,.5)", "dash": "dot"}},
            increasing={"marker": {"color": "#2a9d8f"}},
            decreasing={"marker": {"color": "#e76f51"}},
            totals={"marker": {"color": "#264653"}},
        )
    )
    span = max(abs(v) for v in [*values, total, 1e-6])
    fig.update_layout(
        title={"text": title, "font": {"size": 15}},
        height=340,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        showlegend=False,
        yaxis={"title": "logit", "zeroline": True, "range": [min(0, min(np.cumsum(values)), total) - 0.25 * span,
                                                            max(0, max(np.cumsum(values)), total) + 0.25 * span]},
    )
    return fig


def problems_table(problems: Sequence, title: str) -> None:
    """Skipped files and folders, listed for the user."""
    if not problems:
        return
    with st.expander(f"{title}: {len(problems)}", icon=":material/warning:"):
        st.dataframe(pd.DataFrame(appstate.problem_rows(problems)), hide_index=True, width="stretch")


# -- the image shown on Explain and Intervene ----------------------------------------------------
@dataclass
class Picked:
    name: str
    feats: torch.Tensor  # (H, W, D)
    shown: np.ndarray  # (S, S, 3) uint8
    key: str  # identifies the image


def image_picker(ctx: Context) -> Picked | None:
    """Choose an image from the data folder or upload one; it stays chosen across pages."""
    state = st.session_state
    source = kept(
        st.segmented_control, "Image", "img_source", SOURCE_DATA, options=[SOURCE_DATA, SOURCE_UPLOAD],
        required=True,
    )
    if source == SOURCE_UPLOAD:
        return _uploaded_image(ctx)
    data = state.get("data_dir") or ""
    splits = [s for s in ("val", "train") if (Path(data) / s).is_dir()]
    if not splits:
        st.warning(f"The data folder “{data}” has no train/ or val/ split; set it in the sidebar or upload an image.")
        return None
    cols = st.columns([1, 2, 3])
    with cols[0]:
        split = kept(st.selectbox, "Split", "img_split", splits[0], options=splits)
    try:
        rows, _ = folder_classes(data, split, ctx.backbone.name, ctx.backbone.labels, ctx.backbone.wnids)
    except DataError as exc:
        st.warning(str(exc))
        return None
    decomposed = set(ctx.run.classes.tolist())
    folders = [r["folder"] for r in rows]
    by_folder = {r["folder"]: r for r in rows}
    run_first = next((r["folder"] for r in rows if r["label"] in decomposed), folders[0])
    with cols[1]:
        folder = kept(
            st.selectbox, "Class", "img_class", run_first, options=folders,
            format_func=lambda f: by_folder[f]["name"] + (" ✓" if by_folder[f]["label"] in decomposed else ""),
            help="✓ marks classes decomposed in this run.",
        )
    files = sorted(
        p.name for p in (Path(data) / split / folder).iterdir() if p.suffix.lower() in appstate.IMAGE_SUFFIXES
    )
    if not files:
        st.warning("This class folder has no images.")
        return None
    with cols[2]:
        file = kept(st.selectbox, "Photo", "img_file", files[0], options=files)
    path = Path(data) / split / folder / file
    try:
        feats, shown = image_features(
            backbone_key(ctx.backbone), str(path), path.name, ctx.backbone, path.stat().st_mtime
        )
    except (BadImage, OSError) as exc:
        st.error(str(exc))
        return None
    return Picked(f"{by_folder[folder]['name']} / {file}", torch.from_numpy(feats), shown, str(path))


def _uploaded_image(ctx: Context) -> Picked | None:
    state = st.session_state
    uploaded = st.file_uploader(
        "Upload a photo", key=f"uploader.{state.get('uploader_n', 0)}",
        help="JPEG, PNG, BMP, GIF, TIFF or WebP. Anything else is refused with a message.",
    )
    if uploaded is not None:
        data = uploaded.getvalue()
        state["upload"] = {"name": uploaded.name, "data": data, "digest": hashlib.sha1(data).hexdigest()}
    upload = state.get("upload")
    if not upload:
        st.caption("Upload a photo to explain it.")
        return None
    try:
        feats, shown = image_features(backbone_key(ctx.backbone), upload["data"], upload["name"], ctx.backbone)
    except BadImage as exc:
        st.error(str(exc), icon=":material/block:")
        return None
    if uploaded is None:
        st.caption(f"Using the photo uploaded earlier: {upload['name']}")
    return Picked(upload["name"], torch.from_numpy(feats), shown, "upload:" + upload["digest"])


# -- validation features (Intervene, Evaluate) ---------------------------------------------------
def val_controls(ctx: Context) -> tuple[str, str, int, tuple[str, ...] | None]:
    """Where the held-out images come from: (data folder, split, images per class, classes)."""
    data = st.session_state.get("data_dir") or ""
    cols = st.columns([2, 2, 3])
    with cols[0]:
        per_class = kept(
            st.number_input, "Images per class", "val_per_class", 50, min_value=1, max_value=10_000, step=10,
            help="Held-out images per class (the sample has 50 per class in val/).",
        )
    with cols[1]:
        only_run = kept(
            st.toggle, "Only the run's classes", "val_only_run", False,
            help="Evaluate on the decomposed classes only (faster), or on every class of the split.",
        )
    with cols[2]:
        st.caption(f"Held-out images from **{data}/val**")
    classes = tuple(c["folder"] for c in ctx.run.manifest["classes"]) if only_run else None
    return data, "val", int(per_class), classes


def val_features(ctx: Context, settings, compute: bool) -> SplitFeatures | None:
    """The held-out features (computed once with a progress bar, then shared from the cache)."""
    data, split, per_class, classes = settings
    key = (backbone_key(ctx.backbone), data, split, per_class, classes)
    done = st.session_state.setdefault("val_ready", [])
    if not compute and key not in done:
        return None
    try:
        if compute:  # the backbone pass, with progress; it fills protolib's disk cache
            bar = st.progress(0.0, text="Reading held-out images…")
            started = time.perf_counter()

            def progress(_stage, n, total):
                seconds = time.perf_counter() - started
                bar.progress(n / max(total, 1), text=f"Features of held-out images: {n}/{total} · {seconds:.0f} s")

            split_features(
                ctx.backbone, data, split, images_per_class=per_class or None,
                classes=list(classes) if classes else None, progress=progress,
            )
            bar.empty()
        features = split_features_cached(*key, ctx.backbone)
    except (DataError, BackboneError) as exc:
        st.error(f"The held-out images cannot be used: {exc}")
        return None
    if key not in done:
        done.append(key)
    return features
