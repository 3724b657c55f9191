"""Decompose: find k part prototypes per class of a trained classifier and save them as a run.

Read from the bottom: the page is the short script there; each function above draws one section.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from pages.common import cache, figures, jobs, navigation, state, weights
from pages.common.cache import FolderClass
from pages.common.jobs import STAGE_TEXT
from pages.common.sidebar import is_published, probe_roots, runs_by_name, select_run, select_run_path
from pages.common.uploads import extract_zip_upload, save_uploads
from pages.common.viewmodels import probe_rows, visible_run_rows
from protolib.backbones import DEFAULT_BACKBONE, Backbone, BackboneError, available_backbones
from protolib.backbones.probe_models import PROBE_ONLY, probe_name
from protolib.data import DataError, available_splits
from protolib.data.folders import NoMatchingClasses
from protolib.data.uploads import UploadError
from protolib.method import DEFAULT_STRATEGY, MAX_K, STRATEGIES
from protolib.method.discovery import DEFAULT_DISCOVERY, DISCOVERIES, DISCOVERY_LABELS
from protolib.pipeline import run_decomposition
from protolib.probe import DEFAULT_L2, fit_probe
from protolib.runs import save_run
from protolib.runs.names import auto_run_name, safe_name
from protolib.workspace.quotas import QuotaExceeded, megabytes

STRATEGY_TEXT = {
    "optimized": "optimized (default)",
    "paper": "paper objective",
    "uniform": "uniform",
    "proportional": "proportional to alpha",
}
SOURCE_DATA, SOURCE_PHOTOS, SOURCE_ZIP = "Data folder", "Uploaded photos", "Zip of a dataset"
PROBE_TEXT = {"train": ("Features of training images", "images"), "val": ("Features of held-out images", "images")}
L2_CHOICES = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]


@dataclass
class Images:
    """Where the training images come from, and the class folders found there."""

    source: str
    data: str
    classes: list[FolderClass]
    unknown_classes: bool  # no class folder names a class of the model: a probe can help


@dataclass
class Settings:
    classes: list[str]  # class folders
    k: int
    per_class: int
    strategy: str
    seed: int
    name: str
    discovery: str = DEFAULT_DISCOVERY


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


# -- 1. images -----------------------------------------------------------------------------------
def images_section(backbone: Backbone) -> Images:
    with st.container(border=True):
        st.markdown("##### 1 · Images")
        source = state.kept(
            st.segmented_control,
            "Images from",
            "dec_source",
            SOURCE_DATA,
            options=[SOURCE_DATA, SOURCE_PHOTOS, SOURCE_ZIP],
            required=True,
        )
        if source == SOURCE_ZIP:
            zip_upload()
            return Images(source, "", [], False)
        if source == SOURCE_DATA:
            data, version = state.data_dir(), 0
            refusal = state.data_refusal()
            if refusal:
                st.error(refusal, icon=":material/block:")
                return Images(source, "", [], False)
            st.markdown(f"Training images from **`{data or '(no folder set)'}/train`** (set the folder in the sidebar).")
            zip_notes(data)
        else:
            data, version = str(state.upload_root()), st.session_state.get("uploads_added", 0)
            photo_upload(backbone, data, version)
        return class_folders_found(backbone, source, data, version)


def class_folders_found(backbone: Backbone, source: str, data: str, version: int) -> Images:
    """The class folders of ``data/train`` the model knows, with what was skipped and why."""
    classes, problems, unknown = [], [], False
    try:
        classes, problems = cache.folder_classes(
            data, "train", cache.backbone_key(backbone), backbone.labels, backbone.wnids, version
        )
    except NoMatchingClasses as exc:
        st.error(f"No usable images: {figures.md(exc)}", icon=":material/folder_off:")
        unknown = True
    except DataError as exc:
        if source == SOURCE_DATA:
            st.error(f"No usable images: {figures.md(exc)}", icon=":material/folder_off:")
        else:
            st.info("No photos uploaded yet: choose their class, pick the files and press **Add these photos**.")
    unknown = unknown or any(p.unknown_class for p in problems)
    if unknown:
        st.info(
            "Class folders that are not classes of this model can still be decomposed: fit a linear probe on "
            "this folder (**Fit a linear probe** below), then decompose the probed model.",
            icon=":material/lightbulb:",
        )
    figures.problems_table(problems, "Folders skipped")
    return Images(source, data, classes, unknown)


def photo_upload(backbone: Backbone, data: str, version: int) -> None:
    """Photos of one class of the model at a time, saved into this session's data folder."""
    session = st.session_state
    label_col, file_col = st.columns([1, 2])
    with label_col:
        label = state.kept(
            st.selectbox,
            "Class of these photos",
            "upload_label",
            0,
            options=list(range(len(backbone.labels))),
            format_func=lambda i: backbone.labels[i],
            help="Type to search the model's classes.",
        )
    with file_col:
        files = st.file_uploader(
            "Photos",
            accept_multiple_files=True,
            key=f"dec_uploader.{version}",
            help="JPEG, PNG, BMP, GIF, TIFF or WebP; other files are refused with a message.",
        )
    if st.button("Add these photos", disabled=not files, icon=":material/add_photo_alternate:"):
        saved, problems = save_uploads(
            data, "train", str(label), [(f.name, f.getvalue()) for f in files or []], room=state.workspace().upload_room()
        )
        session["uploads_added"] = version + 1
        session["upload_messages"] = {
            "saved": len(saved),
            "class": backbone.labels[label],
            "problems": [p.reason for p in problems],
        }
        st.rerun()
    messages = session.get("upload_messages")
    if messages:
        if messages["saved"]:
            st.success(f"Added {messages['saved']} photo(s) to “{figures.md(messages['class'])}”.")
        for text in messages["problems"]:
            st.error(text, icon=":material/block:")
    if state.upload_root().is_dir() and st.button("Remove all uploaded photos", icon=":material/delete:"):
        shutil.rmtree(state.upload_root(), ignore_errors=True)
        session["uploads_added"] = version + 1
        session.pop("upload_messages", None)
        st.rerun()


def zip_upload() -> None:
    """Upload a .zip of an image folder; once extracted, it becomes the session's data folder."""
    session = st.session_state
    version = session.get("zip_n", 0)
    file = st.file_uploader(
        "A .zip of an image folder",
        type=["zip"],
        key=f"dec_zip.{version}",
        help="Either train/<class>/<images> (and val/<class>/<images> for the accuracy), or just "
        "<class>/<images>, which go to train/; a classes.csv (wnid,imagenet_index,name) beside them is kept.",
    )
    st.caption(
        "Class folders can have any names: those that are not classes of the model can be decomposed after "
        "fitting a linear probe on them (below). Files that are not images are skipped and listed."
    )
    if st.button("Extract and use this folder", disabled=file is None, icon=":material/folder_zip:"):
        try:
            room = state.workspace().check_upload(file.size)
            out = extract_zip_upload(state.dataset_root(), file.name, file.getvalue(), room=room)
        except (UploadError, QuotaExceeded, OSError) as exc:
            st.error(figures.md(f"“{file.name}” cannot be used: {exc}"), icon=":material/block:")
            return
        session["zip_n"] = version + 1
        session["last_zip"] = {
            "name": file.name,
            "root": str(out.root),
            "summary": out.summary(),
            "problems": [[p.path, p.reason] for p in out.problems],
        }
        session["data_dir"], session["dec_source"] = str(out.root), SOURCE_DATA  # the sidebar shows it next run
        st.rerun()
    if state.dataset_root().is_dir() and st.button("Remove all uploaded datasets", icon=":material/delete:"):
        in_use = Path(state.data_dir() or "/").is_relative_to(state.dataset_root().resolve())
        shutil.rmtree(state.dataset_root(), ignore_errors=True)
        if in_use:
            session["data_dir"] = state.default_data_dir()
        session.pop("last_zip", None)
        st.rerun()
    st.caption(f"Upload space left for this session: {megabytes(state.workspace().upload_room())}.")


def zip_notes(data: str) -> None:
    """What the last extraction gave, while its folder is the data folder."""
    last = st.session_state.get("last_zip")
    if last and last["root"] == data:
        st.success(figures.md(f"Extracted “{last['name']}”: {last['summary']}."), icon=":material/folder_zip:")
        figures.problems_table(last["problems"], "Skipped in the zip")


# -- a linear probe ------------------------------------------------------------------------------
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
        k_col, per_class_col, strategy_col, seed_col = st.columns(4)
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
        with seed_col:
            seed = state.kept(st.number_input, "Seed", "dec_seed", 0, min_value=0, max_value=2**31 - 1, step=1)
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
                "that make the logit decide the parts (README: ground-truth parts benchmark). Scaling, refinement and "
                "the exact head are the same for both.",
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
    return Settings(list(classes), int(k), int(per_class), strategy, int(seed), name or automatic, discovery), start


# -- 3. the run ----------------------------------------------------------------------------------
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
            random_state=settings.seed,
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
