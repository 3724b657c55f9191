"""The held-out photos that Intervene, Evaluate and Mistakes measure on: where they come from, and their
features (one backbone pass with a progress bar, then shared from the caches)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from pages.common import cache, jobs
from pages.common.figures import md
from pages.common.run_context import Context, run_data
from pages.common.state import data_refusal, kept, workspace
from protolib.backbones import BackboneError
from protolib.data import DataError
from protolib.data.features import SplitFeatures, split_features
from protolib.evaluation.metrics import label_space_problem


@dataclass(frozen=True)
class HeldOut:
    """Which held-out photos: the data folder, the split, images per class, and the class folders
    (None: every class of the split)."""

    data: str
    split: str
    per_class: int
    classes: tuple[str, ...] | None

    def key(self, ctx: Context) -> str:
        return f"{ctx.key}|{self.data}|{self.split}|{self.per_class}|{self.classes}"


def held_out_controls(ctx: Context) -> HeldOut:
    """The controls of where the held-out images come from."""
    data, which = run_data(ctx)
    per_class_col, only_run_col, where_col = st.columns([2, 2, 3])
    with per_class_col:
        per_class = kept(
            st.number_input,
            "Images per class",
            "val_per_class",
            50,
            min_value=1,
            max_value=10_000,
            step=10,
            help="Held-out images per class (the sample has 50 per class in val/).",
        )
    with only_run_col:
        only_run = kept(
            st.toggle,
            "Only the run's classes",
            "val_only_run",
            False,
            help="Evaluate on the decomposed classes only (faster), or on every class of the split.",
        )
    with where_col:
        if data:
            st.caption(f"Held-out images from {which}: `{workspace().redact(data)}/val`")
        else:
            st.warning(data_refusal() or "No data folder is set (sidebar).")
    classes = tuple(c["folder"] for c in ctx.run.manifest["classes"]) if only_run else None
    return HeldOut(data, "val", int(per_class), classes)


def held_out_features(ctx: Context, held_out: HeldOut, compute: bool) -> SplitFeatures | None:
    """The held-out features: None until this session computed them once (``compute``: now, with a
    progress bar that fills protolib's disk cache); afterwards shared from the cache."""
    key = (cache.backbone_key(ctx.backbone), held_out.data, held_out.split, held_out.per_class, held_out.classes)
    done = st.session_state.setdefault("val_ready", [])
    if not compute and key not in done:
        return None
    problem = label_space_problem(ctx.run, ctx.backbone, held_out.data, held_out.split) if held_out.data else None
    if problem:
        st.error(md(workspace().redact(f"The held-out images cannot be used: {problem}")))
        return None
    try:
        if compute:
            with jobs.queued("held-out feature extraction"):
                _backbone_pass(ctx, held_out)
        features = cache.shared_split_features(*key, ctx.backbone)
    except (DataError, BackboneError) as exc:
        st.error(md(f"The held-out images cannot be used: {exc}"))
        return None
    if key not in done:
        done.append(key)
    return features


def _backbone_pass(ctx: Context, held_out: HeldOut) -> None:
    bar = st.progress(0.0, text="Reading held-out images…")
    started = time.perf_counter()

    def progress(_stage, n, total):
        seconds = time.perf_counter() - started
        bar.progress(n / max(total, 1), text=f"Features of held-out images: {n}/{total} · {seconds:.0f} s")

    split_features(
        ctx.backbone,
        held_out.data,
        held_out.split,
        images_per_class=held_out.per_class or None,
        classes=list(held_out.classes) if held_out.classes else None,
        progress=progress,
    )
    bar.empty()
