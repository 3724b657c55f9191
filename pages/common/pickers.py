"""The photo shown on Explain and Intervene: one from the data folder or an upload, kept chosen
across pages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from pages.common import cache, figures
from pages.common.run_context import Context, run_data
from pages.common.state import data_refusal, kept
from protolib.data import BadImage, DataError, available_splits, split_images

SOURCE_DATA, SOURCE_UPLOAD = "Data folder", "Upload"


@dataclass
class Picked:
    name: str
    feats: torch.Tensor  # (H, W, D)
    shown: np.ndarray  # (S, S, 3) uint8
    key: str  # identifies the image


def image_picker(ctx: Context) -> Picked | None:
    """Choose a photo from the data folder or upload one; None (with a message) when there is none."""
    source = kept(
        st.segmented_control,
        "Image",
        "img_source",
        SOURCE_DATA,
        options=[SOURCE_DATA, SOURCE_UPLOAD],
        required=True,
    )
    return uploaded_photo(ctx) if source == SOURCE_UPLOAD else data_photo(ctx, run_data(ctx)[0])


def data_photo(ctx: Context, data: str) -> Picked | None:
    """A split, a class and a photo of the data folder (classes of the run first, marked ✓)."""
    if not data:
        st.warning(data_refusal() or "No data folder is set: set one in the sidebar, or upload an image.")
        return None
    splits = sorted(available_splits(data), key=lambda s: s != "val")  # held-out photos first
    if not splits:
        st.warning(f"The data folder “{figures.md(data)}” has no class folders; set it in the sidebar or upload an image.")
        return None
    split_col, class_col, file_col = st.columns([1, 2, 3])
    with split_col:
        split = kept(st.selectbox, "Split", "img_split", splits[0], options=splits)
    try:
        classes, _ = cache.folder_classes(data, split, ctx.backbone.name, ctx.backbone.class_names, ctx.backbone.wnids)
    except DataError as exc:
        st.warning(figures.md(exc))
        return None
    decomposed = set(ctx.decomposed)
    by_folder = {c.folder: c for c in classes}
    run_first = next((c.folder for c in classes if c.label in decomposed), classes[0].folder)
    with class_col:
        folder = kept(
            st.selectbox,
            "Class",
            "img_class",
            run_first,
            options=list(by_folder),
            format_func=lambda f: by_folder[f].name + (" ✓" if by_folder[f].label in decomposed else ""),
            help="✓ marks classes decomposed in this run.",
        )
    paths = {p.name: p for p in split_images(data, split, folder)}
    files = list(paths)
    if not files:
        st.warning("This class folder has no images.")
        return None
    with file_col:
        file = kept(st.selectbox, "Photo", "img_file", files[0], options=files)
    path = paths[file]
    try:
        feats, shown = cache.image_features(
            cache.backbone_key(ctx.backbone), str(path), path.name, ctx.backbone, path.stat().st_mtime
        )
    except (BadImage, OSError) as exc:
        st.error(str(exc))
        return None
    return Picked(f"{by_folder[folder].name} / {file}", torch.from_numpy(feats), shown, str(path))


def uploaded_photo(ctx: Context) -> Picked | None:
    """A photo uploaded in this session (kept until another is uploaded)."""
    state = st.session_state
    uploaded = st.file_uploader(
        "Upload a photo",
        key=f"uploader.{state.get('uploader_n', 0)}",
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
        feats, shown = cache.image_features(cache.backbone_key(ctx.backbone), upload["data"], upload["name"], ctx.backbone)
    except BadImage as exc:
        st.error(figures.md(exc), icon=":material/block:")
        return None
    if uploaded is None:
        st.caption(f"Using the photo uploaded earlier: {figures.md(upload['name'])}")
    return Picked(upload["name"], torch.from_numpy(feats), shown, "upload:" + upload["digest"])
