"""Decompose: find k part prototypes per class of a trained classifier and save them as a run."""

import shutil
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from pages import ui
from protolib import appstate
from protolib.backbones import BackboneError, available_backbones
from protolib.backbones.probe_models import PROBE_ONLY, probe_name
from protolib.data import DataError
from protolib.decompose import DEFAULT_STRATEGY, STRATEGIES
from protolib.pipeline import STAGES, run_decomposition
from protolib.probe import DEFAULT_L2, fit_probe
from protolib.runs import RunError, list_runs, save_run
from protolib.uploads import UploadError

STAGE_TEXT = {
    "features": ("Backbone features", "images"),
    "nmf": ("NMF part discovery", "classes"),
    "scaling": ("Scaling to the head", "classes"),
    "refinement": ("Refinement", "classes"),
}
STRATEGY_TEXT = {
    "optimized": "optimized (default)",
    "paper": "paper objective",
    "uniform": "uniform",
    "proportional": "proportional to alpha",
}

SOURCE_PHOTOS, SOURCE_ZIP = "Uploaded photos", "Zip of a dataset"
L2_CHOICES = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]


# -- a zipped image folder -----------------------------------------------------------------------
def zip_upload() -> None:
    """Upload a .zip of an image folder; once extracted, it becomes the session's data folder."""
    version = state.get("zip_n", 0)
    file = st.file_uploader(
        "A .zip of an image folder", type=["zip"], key=f"dec_zip.{version}",
        help="Either train/<class>/<images> (and val/<class>/<images> for the accuracy), or just "
        "<class>/<images>, which go to train/; a classes.csv (wnid,imagenet_index,name) beside them is kept.",
    )
    st.caption(
        "Class folders can have any names: those that are not classes of the model can be decomposed after "
        "fitting a linear probe on them (below). Files that are not images are skipped and listed."
    )
    if st.button("Extract and use this folder", disabled=file is None, icon=":material/folder_zip:"):
        try:
            out = appstate.extract_zip_upload(ui.dataset_root(), file.name, file.getvalue())
        except (UploadError, OSError) as exc:
            st.error(f"“{file.name}” cannot be used: {exc}", icon=":material/block:")
            return
        state["zip_n"] = version + 1
        state["last_zip"] = {
            "name": file.name, "root": str(out.root), "summary": out.summary(),
            "problems": [[p.path, p.reason] for p in out.problems],
        }
        state["data_dir"], state["dec_source"] = str(out.root), ui.SOURCE_DATA  # the sidebar shows it next run
        st.rerun()
    if ui.dataset_root().is_dir() and st.button("Remove all uploaded datasets", icon=":material/delete:"):
        shutil.rmtree(ui.dataset_root(), ignore_errors=True)
        if (state.get("data_dir") or "").startswith(str(ui.dataset_root())):
            state["data_dir"] = ui.default_data_dir()
        state.pop("last_zip", None)
        st.rerun()


def zip_notes(data: str) -> None:
    """What the last extraction gave, while its folder is the data folder."""
    last = state.get("last_zip")
    if last and last["root"] == data:
        st.success(f"Extracted “{last['name']}”: {last['summary']}.", icon=":material/folder_zip:")
        ui.problems_table(last["problems"], "Skipped in the zip")


# -- a linear probe ------------------------------------------------------------------------------
def probe_section(data: str, expanded: bool) -> None:
    """Fit a linear head on a frozen backbone's pooled features of ``data``; it becomes the backbone."""
    trunks = {s.name: s.description for s in available_backbones()} | PROBE_ONLY
    current = state.get("backbone") or ""
    has_train = bool(data) and (Path(data) / "train").is_dir()
    with st.expander("Fit a linear probe", icon=":material/model_training:", expanded=expanded):
        st.caption(
            f"A linear head on a frozen backbone's average-pooled features of **`{data or '(no folder)'}/train`**, "
            "one class per folder (names from classes.csv when it lists them); **val/** measures its accuracy "
            "(without it, every 5th training image is held out). The probed model is decomposed exactly, "
            "whatever its classes; VGG is offered only this way."
        )
        cols = st.columns(3)
        with cols[0]:
            trunk = ui.kept(
                st.selectbox, "Backbone to probe", "probe_trunk", current if current in trunks else ui.DEFAULT_BACKBONE,
                options=list(trunks), format_func=lambda n: trunks.get(n, n),
            )
        with cols[1]:
            per_class = ui.kept(
                st.number_input, "Probe images per class", "probe_per_class", 100, min_value=2, max_value=100_000, step=10,
                help="The first N images of each class in train/ (and in val/).",
            )
        with cols[2]:
            l2 = ui.kept(
                st.select_slider, "L2 penalty", "probe_l2", DEFAULT_L2, options=L2_CHOICES, format_func=lambda v: f"{v:g}",
                help="On standardised features; larger for few images per class. The head is fit to convergence "
                "(full-batch L-BFGS), so there are no epochs to choose.",
            )
        auto = appstate.clean_run_name(f"probe-{trunk}-{Path(data).name or 'data'}")
        if state.get("probe_name") in (None, "", state.get("probe_name_auto")):  # untouched: follow the settings
            state["probe_name"] = auto
        state["probe_name_auto"] = auto
        name_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
        with name_col:
            name = ui.kept(st.text_input, "Probe name", "probe_name", auto, help="Saved under the runs folder.")
        with button_col:
            start = st.button("Fit probe", icon=":material/play_arrow:", disabled=not has_train, width="stretch")
        if start:
            fit(data, trunk, int(per_class), float(l2), name or auto)
        probe_result()
        rows = appstate.probe_rows(appstate.runs_dir())
        if rows:
            st.dataframe(
                pd.DataFrame(rows), hide_index=True, width="stretch",
                column_config={"val accuracy": st.column_config.NumberColumn(format="percent")},
            )


def fit(data: str, trunk: str, per_class: int, l2: float, name: str) -> None:
    """Fit, save under the runs folder, and make the probe the session's backbone."""
    device = state.get("device") or "cpu"
    with st.status(f"Fitting a linear probe on {trunk}…", expanded=True) as status:
        bar = st.progress(0.0, text="Backbone features: waiting")
        started = time.perf_counter()

        def progress(stage: str, done: int, total: int) -> None:
            which = "held-out" if "val" in stage else "training"
            seconds = time.perf_counter() - started
            bar.progress(min(done / max(total, 1), 1.0), text=f"Features of {which} images: {done}/{total} · {seconds:.0f} s")

        try:
            name = appstate.clean_run_name(name)
            model = trunk if trunk in PROBE_ONLY else ui.get_backbone(trunk, None, device)  # VGG: no cached classifier
            probe = fit_probe(
                data, model, device=device, images_per_class=per_class, val_images_per_class=per_class, l2=l2,
                progress=progress,
            )
            path = probe.save(appstate.unique_run_path(appstate.runs_dir(), name))
        except (DataError, BackboneError, ValueError, OSError) as exc:
            status.update(label="The probe could not be fit", state="error")
            st.error(str(exc), icon=":material/error:")
            return
        status.update(label=f"Saved probe “{path.name}” in {time.perf_counter() - started:.1f} s", state="complete")
    m = probe.manifest
    state["last_probe"] = {
        "name": path.name, "backbone": m["backbone"], "classes": len(m["classes"]), "n_train": m["n_train"],
        "n_val": m["n_val"], "validation": m["validation"], "val_accuracy": m["val_accuracy"],
        "train_accuracy": m["train_accuracy"], "seconds": m["seconds"], "problems": m["problems"],
    }
    state["backbone"] = probe_name(path)  # the sidebar shows it on the next run
    state["probe_name"] = ""  # the next probe gets a fresh automatic name
    st.rerun()


def probe_result() -> None:
    last = state.get("last_probe")
    if not last:
        return
    st.success(
        f"Probe **{last['name']}** saved ({last['classes']} classes on {last['backbone']}, {last['seconds']:.1f} s). "
        "It is now the backbone: choose its classes below and run the decomposition.",
        icon=":material/check_circle:",
    )
    cols = st.columns(3)
    cols[0].metric("Validation accuracy", f"{100 * last['val_accuracy']:.1f} %", help=last["validation"])
    cols[1].metric("Training accuracy", f"{100 * last['train_accuracy']:.1f} %")
    cols[2].metric("Images (train + held out)", f"{last['n_train']} + {last['n_val']}")
    ui.problems_table(last["problems"], "Skipped while fitting")


ui.entry()
state = st.session_state
st.title("Decompose")
st.caption(
    "Find *k* part prototypes per class in the model's features (NMF), scale them to the class's head row "
    "and refine them so that they sum to it exactly: the same model, now explained by parts."
)

try:
    backbone = ui.get_backbone(state.get("backbone") or "efficientnet_lite0", None, state.get("device") or "cpu")
except BackboneError as exc:
    st.error(f"The backbone cannot be loaded: {exc}", icon=":material/error:")
    st.stop()
if backbone.note:
    st.warning(backbone.note, icon=":material/info:")

# -- 1. images ---------------------------------------------------------------------------------
with st.container(border=True):
    st.markdown("##### 1 · Images")
    source = ui.kept(
        st.segmented_control, "Images from", "dec_source", ui.SOURCE_DATA,
        options=[ui.SOURCE_DATA, SOURCE_PHOTOS, SOURCE_ZIP], required=True,
    )
    if source == ui.SOURCE_DATA:
        data = state.get("data_dir") or ""
        st.markdown(f"Training images from **`{data or '(no folder set)'}/train`** (set the folder in the sidebar).")
        zip_notes(data)
        version = 0
    elif source == SOURCE_ZIP:
        zip_upload()
        data, version = "", 0
    else:
        data = str(ui.upload_root())
        version = state.get("uploads_added", 0)
        label_col, file_col = st.columns([1, 2])
        with label_col:
            label = ui.kept(
                st.selectbox, "Class of these photos", "upload_label", 0,
                options=list(range(len(backbone.labels))), format_func=lambda i: backbone.labels[i],
                help="Type to search the model's classes.",
            )
        with file_col:
            files = st.file_uploader(
                "Photos", accept_multiple_files=True, key=f"dec_uploader.{version}",
                help="JPEG, PNG, BMP, GIF, TIFF or WebP; other files are refused with a message.",
            )
        if st.button("Add these photos", disabled=not files, icon=":material/add_photo_alternate:"):
            saved, problems = appstate.save_uploads(
                data, "train", str(label), [(f.name, f.getvalue()) for f in files or []]
            )
            state["uploads_added"] = version + 1
            state["upload_messages"] = {
                "saved": len(saved), "class": backbone.labels[label], "problems": [p.reason for p in problems]
            }
            st.rerun()
        messages = state.get("upload_messages")
        if messages:
            if messages["saved"]:
                st.success(f"Added {messages['saved']} photo(s) to “{messages['class']}”.")
            for text in messages["problems"]:
                st.error(text, icon=":material/block:")
        if ui.upload_root().is_dir() and st.button("Remove all uploaded photos", icon=":material/delete:"):
            shutil.rmtree(ui.upload_root(), ignore_errors=True)
            state["uploads_added"] = version + 1
            state.pop("upload_messages", None)
            st.rerun()

    found, folder_problems, unknown_classes = [], [], False
    try:
        if source != SOURCE_ZIP:
            found, folder_problems = ui.folder_classes(
                data, "train", ui.backbone_key(backbone), backbone.labels, backbone.wnids, version
            )
    except DataError as exc:
        if source == ui.SOURCE_DATA:
            st.error(f"No usable images: {exc}", icon=":material/folder_off:")
            unknown_classes = (Path(data) / "train").is_dir()
        else:
            st.info("No photos uploaded yet: choose their class, pick the files and press **Add these photos**.")
    if unknown_classes or any(p.reason.startswith("class folder matches no class") for p in folder_problems):
        st.info(
            "Class folders that are not classes of this model can still be decomposed: fit a linear probe on "
            "this folder (**Fit a linear probe** below), then decompose the probed model.",
            icon=":material/lightbulb:",
        )
    ui.problems_table(folder_problems, "Folders skipped")

if source == ui.SOURCE_DATA:
    probe_section(data, expanded=unknown_classes or bool(state.get("last_probe")))

# -- 2. classes and settings ------------------------------------------------------------------
by_folder = {r["folder"]: r for r in found}
with st.container(border=True):
    st.markdown("##### 2 · Classes and settings")
    if found:
        classes = ui.kept(  # one choice per data folder: switching folders does not empty it
            st.multiselect, "Classes", f"dec_classes|{data}", [r["folder"] for r in found] if len(found) <= 12 else [],
            options=list(by_folder),
            format_func=lambda f: f"{by_folder[f]['name']} · {by_folder[f]['n_images']} images",
            placeholder="Type to search classes by name",
        )
    else:
        classes = st.multiselect("Classes", [], disabled=True, placeholder="No class folders found")
    cols = st.columns(4)
    with cols[0]:
        k = ui.kept(st.slider, "Prototypes per class (k)", "dec_k", 3, min_value=1, max_value=10)
    with cols[1]:
        per_class = ui.kept(
            st.number_input, "Images per class", "dec_per_class", 60, min_value=1, max_value=5000, step=10,
            help="The first N training images of each class (sorted by file name, so runs are reproducible).",
        )
    with cols[2]:
        strategy = ui.kept(
            st.selectbox, "Refinement", "dec_strategy", DEFAULT_STRATEGY, options=list(STRATEGIES),
            format_func=lambda s: STRATEGY_TEXT.get(s, s),
            help="How the residual of the head row is shared among the prototypes: **optimized** keeps each "
            "prototype's heatmap best on held-out images; **paper** is the paper's objective (L-BFGS); **uniform** "
            "splits it evenly; **proportional** in proportion to alpha. Every strategy is computed (Evaluate "
            "compares them); this one drives the run's head.",
        )
    with cols[3]:
        seed = ui.kept(st.number_input, "Seed", "dec_seed", 0, min_value=0, max_value=2**31 - 1, step=1)

    auto = appstate.auto_run_name(backbone.name, int(k), strategy, len(classes))
    if state.get("dec_name") in (None, "", state.get("dec_name_auto")):  # untouched: follow the settings
        state["dec_name"] = auto
    state["dec_name_auto"] = auto
    name_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
    with name_col:
        run_name = ui.kept(st.text_input, "Run name", "dec_name", auto, help="Saved under the runs folder.")
    with button_col:
        start = st.button(
            "Run decomposition", type="primary", icon=":material/play_arrow:", disabled=not classes,
            width="stretch",
        )

# -- 3. run ------------------------------------------------------------------------------------
if start:
    try:
        run_name = appstate.clean_run_name(run_name or auto)
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
    timings = {}
    with st.status(f"Decomposing {len(classes)} classes with k = {k}…", expanded=True) as status:
        bars = {s: st.progress(0.0, text=f"{STAGE_TEXT[s][0]}: waiting") for s in STAGES}
        started = time.perf_counter()
        clock = {"mark": started}

        def progress(stage: str, done: int, total: int) -> None:
            now = time.perf_counter()
            entry = timings.setdefault(stage, {"begin": clock["mark"]})
            entry.update(done=done, total=total, seconds=now - entry["begin"])
            title, unit = STAGE_TEXT.get(stage, (stage, "items"))
            bars[stage].progress(
                min(done / max(total, 1), 1.0), text=f"{title}: {done}/{total} {unit} · {entry['seconds']:.1f} s"
            )
            if done >= total:
                clock["mark"] = now

        try:
            run = run_decomposition(
                backbone, data, "train", classes=list(classes), images_per_class=int(per_class), k=int(k),
                strategy=strategy, seed=int(seed), progress=progress,
            )
            path = save_run(run, appstate.unique_run_path(appstate.runs_dir(), run_name))
        except (DataError, BackboneError, RunError, ValueError, OSError) as exc:
            status.update(label="The decomposition failed", state="error")
            st.error(str(exc), icon=":material/error:")
            st.stop()
        seconds = time.perf_counter() - started
        status.update(label=f"Saved run “{path.name}” in {seconds:.1f} s", state="complete")
    state["last_decomposition"] = {
        "run": path.name,
        "seconds": seconds,
        "classes": len(run.classes),
        "images": sum(c["n_images"] for c in run.manifest["classes"]),
        "k": run.k,
        "stages": [
            {"stage": STAGE_TEXT[s][0], "done": t["done"], "total": t["total"], "unit": STAGE_TEXT[s][1],
             "seconds": round(t["seconds"], 2)}
            for s, t in timings.items()
        ],
        "problems": run.manifest["problems"],
    }
    state["dec_name"] = ""  # the next run gets a fresh automatic name
    ui.select_run(path.name)
    st.rerun()

last = state.get("last_decomposition")
if last:
    with st.container(border=True):
        st.success(
            f"Run **{last['run']}** saved: {last['classes']} classes, {last['images']} images, k = {last['k']}, "
            f"in {last['seconds']:.1f} s. It is now the current run.",
            icon=":material/check_circle:",
        )
        cols = st.columns([3, 2])
        with cols[0]:
            st.dataframe(
                pd.DataFrame(last["stages"]), hide_index=True, width="stretch",
                column_config={"seconds": st.column_config.NumberColumn(format="%.2f s")},
            )
        with cols[1]:
            st.page_link("pages/prototypes.py", label="See its prototypes", icon=":material/grid_view:")
            st.page_link("pages/explain.py", label="Explain a photo", icon=":material/image_search:")
        if last["problems"]:
            st.warning(f"{len(last['problems'])} file(s) or folder(s) were skipped; see the list below.")
        ui.problems_table(last["problems"], "Skipped while decomposing")

# -- 4. saved runs -----------------------------------------------------------------------------
st.subheader("Saved runs")
paths = list_runs(appstate.runs_dir())
if not paths:
    st.caption(f"No run saved yet in {appstate.runs_dir()}.")
else:
    table = pd.DataFrame(appstate.run_rows(paths))
    st.dataframe(
        table, hide_index=True, width="stretch",
        column_config={"seconds": st.column_config.NumberColumn(format="%.1f s")},
    )
    names = [p.name for p in paths]
    pick_col, load_col = st.columns([3, 1], vertical_alignment="bottom")
    with pick_col:
        chosen = ui.kept(st.selectbox, "Run to load", "dec_load", state.get("run") or names[0], options=names)
    with load_col:
        if st.button("Load run", icon=":material/upload_file:", width="stretch"):
            ui.select_run(chosen)
            st.rerun()
    st.caption(f"Runs folder: {appstate.runs_dir()}")
