"""Everything the pages read that is worth computing once: Streamlit's caches around protolib.

Models, runs and feature tensors are read-only and shared between sessions, so they sit in
``st.cache_resource`` (arguments starting with ``_`` are not hashed: a key argument names them);
small per-image results sit in ``st.cache_data``. Decompositions live on disk (the runs folder)
and features in protolib's disk cache, so a new server process starts warm.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import streamlit as st
import torch

from pages.common.uploads import read_upload
from protolib.backbones import Backbone, load_backbone
from protolib.data import class_folders, load_image, split_images
from protolib.data.features import Features, SplitFeatures, extract_features, split_features
from protolib.evaluation.metrics import evaluate_run
from protolib.explain import model_input, part_map, upsample
from protolib.method.head import PrototypeHead
from protolib.runs import Run, load_run


def backbone_key(backbone: Backbone) -> str:
    return f"{backbone.name}|{backbone.fingerprint}|{backbone.device}"


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def get_backbone(name: str, weights: str | None, device: str) -> Backbone:
    return load_backbone(name, weights, device)


@st.cache_resource(max_entries=16, show_spinner=False)
def get_run(path: str, modified: float) -> Run:
    """A saved run (``modified``, its manifest's mtime, makes a rewritten run a new entry)."""
    return load_run(path)


@st.cache_resource(max_entries=16, show_spinner=False)
def get_head(run_key: str, _run: Run, _backbone: Backbone) -> PrototypeHead:
    return _run.head(_backbone)


@st.cache_resource(max_entries=12, show_spinner="Reading the class's features…")
def class_features(run_key: str, folder: str, _backbone: Backbone, _paths: tuple[str, ...]) -> Features:
    """Features of a run's training images of one class (from protolib's disk cache after the run)."""
    return extract_features(_backbone, list(_paths))


@st.cache_resource(max_entries=2, show_spinner="Reading held-out features…")
def shared_split_features(
    backbone_key: str, data: str, split: str, per_class: int, classes: tuple[str, ...] | None, _backbone
) -> SplitFeatures:
    """Held-out features, shared between sessions (after the first pass filled the disk cache)."""
    return split_features(_backbone, data, split, images_per_class=per_class or None, classes=list(classes) if classes else None)


@st.cache_resource(max_entries=4, show_spinner=False)
def split_baseline(key: str, _head: PrototypeHead, _pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A held-out split's contributions and unedited predictions, computed once per run and split so
    that each intervention costs one weighted sum (read only: shared between sessions)."""
    contributions = _head.contributions(_pooled)
    return contributions, _head.logits(_pooled, contributions).argmax(dim=1)


@st.cache_data(max_entries=16, show_spinner="Evaluating…")
def evaluation(key: str, data: str, split: str, _run: Run, _backbone: Backbone, _features: SplitFeatures) -> dict:
    """``evaluate_run``'s figures of a run on held-out features (``key`` names the run and the features)."""
    return evaluate_run(_run, _backbone, data, split, features=_features)


@st.cache_data(max_entries=600, show_spinner=False)
def shown_image(path: str, preprocessing: str, _backbone: Backbone) -> np.ndarray:
    """An image as the model sees it (after resize and crop), uint8."""
    return _backbone.preprocessing.display_transform()(load_image(path)).permute(1, 2, 0).numpy()


@st.cache_data(max_entries=64, show_spinner=False)
def image_features(backbone_key: str, source: str | bytes, name: str, _backbone: Backbone, stamp: float = 0.0):
    """(features (H, W, D), the image as the model sees it) of a file path (``stamp``: its mtime)
    or uploaded bytes."""
    pil = read_upload(name, source) if isinstance(source, bytes) else load_image(source)
    x, shown = model_input(_backbone, pil)
    feats, _ = _backbone(x.to(_backbone.device))
    return feats[0].float().cpu().numpy(), shown


@st.cache_data(max_entries=64, show_spinner="Drawing part maps…")
def part_maps(key: str, position: int, start: int, stop: int, _features: Features, _head: PrototypeHead, _shown) -> list:
    """Part maps (NMF parts, before refinement) of images ``start:stop`` of a class's features."""
    presence = _head.presence(_features.feats[start:stop], position)
    return [part_map(upsample(p, img.shape[:2]), img) for p, img in zip(presence, _shown)]


@st.cache_data(ttl=60, show_spinner=False)
def folder_classes(data: str, split: str, backbone_key: str, _class_names, _wnids, version: int = 0):
    """The class folders of ``data/split`` the model knows, with their image counts, and the folders
    skipped (``version`` changes when the caller knows the folder changed, e.g. after an upload).
    Raises ``DataError`` (``NoMatchingClasses`` when no folder names a class of the model)."""
    classes, problems = class_folders(data, split, _class_names, _wnids)
    rows = [replace(c, n_images=len(split_images(data, split, c.folder))) for c in classes]
    return rows, problems
