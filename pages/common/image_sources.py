"""Decompose's first section: where the training images come from (the data folder, photos uploaded one class
at a time, or a zip of a dataset extracted into the session's workspace), and the class folders found there."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from pages.common import cache, figures, state
from pages.common.uploads import extract_zip_upload, save_uploads
from protolib.backbones import Backbone
from protolib.data import ClassFolder, DataError
from protolib.data.folders import NoMatchingClasses
from protolib.data.uploads import UploadError
from protolib.workspace.quotas import QuotaExceeded, megabytes

SOURCE_DATA, SOURCE_PHOTOS, SOURCE_ZIP = "Data folder", "Uploaded photos", "Zip of a dataset"


@dataclass
class Images:
    """Where the training images come from, and the class folders found there."""

    source: str
    data: str
    classes: list[ClassFolder]
    unknown_classes: bool  # no class folder names a class of the model: a probe can help


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
            data, "train", cache.backbone_key(backbone), backbone.class_names, backbone.wnids, version
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
            options=list(range(len(backbone.class_names))),
            format_func=lambda i: backbone.class_names[i],
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
            "class": backbone.class_names[label],
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
