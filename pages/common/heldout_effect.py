"""Intervene's held-out section: the page's intervention measured on the held-out photos (accuracy overall,
per class and, when the data folder has groups.csv, per group), each prototype's importance, and the oracle
experiment. Contributions are cached per split, so an edit redraws this without rerunning the backbone.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
import torch

from pages.common import cache
from pages.common.edit_views import class_accuracy_rows, group_rows, groups_of
from pages.common.heldout import HeldOut, held_out_controls, held_out_features
from pages.common.run_context import Context
from pages.common.shortcut_demo import groups_table
from pages.common.space_edit import split_edited_pooling
from pages.common.state import kept
from protolib.evaluation import intervention as evaluation
from protolib.evaluation.intervention import intervention_effect, oracle_intervention, prototype_importance
from protolib.evaluation.metrics import among_decomposed


def held_out_section(ctx: Context, scale: torch.Tensor, labels: list[int], summary, spatial=None) -> None:
    """The same intervention on the held-out photos: accuracy (overall, per class and, when the data folder
    has groups.csv, per group), each prototype's importance, and the oracle experiment. ``summary``: a place
    beside the table for one line of the same figures."""
    st.markdown("##### The same intervention on the held-out split")
    held_out = held_out_controls(ctx)
    sf = held_out_features(ctx, held_out, compute=False)
    if sf is None:
        st.caption("The held-out photos pass through the backbone once; afterwards every change here is instant.")
        if st.button("Compute held-out features", icon=":material/dataset:"):
            sf = held_out_features(ctx, held_out, compute=True)
        if sf is None:
            summary.caption("Compute the held-out features (below) to see what the edit does to accuracy.")
            return
    among = kept(
        st.toggle,
        "Classify among the run's classes only",
        "val_among_run",
        False,
        help="As in the paper, which decomposes every class: the model chooses between the run's classes only. "
        "Otherwise it keeps all its classes, and a mistake towards a class outside the run cannot be undone "
        "by editing the run's prototypes.",
    )
    head, pooled, truth, names = ctx.head, sf.pooled, sf.labels, ctx.backbone.class_names
    # an edit in space pools each photo's kept cells (from the cached per-cell features)
    spaced = split_edited_pooling(held_out.key(ctx), ctx, sf.matrices, len(sf.paths), spatial) if spatial else sf.pooled
    paths = list(sf.paths)
    if among:
        head, pooled, truth = among_decomposed(ctx.head, sf.pooled, sf.labels)
        spaced = among_decomposed(ctx.head, spaced, sf.labels)[1]
        names = ctx.class_names
        paths = [p for p, label in zip(sf.paths, sf.labels.tolist()) if label in set(ctx.decomposed)]
        if not len(truth):
            st.info("None of these held-out photos belongs to one of the run's classes.")
            return
    key = f"{held_out.key(ctx)}|{among}"
    contributions, before = cache.split_baseline(key, head, pooled)
    spaced_contributions = head.contributions(spaced) if spatial else contributions
    effect = intervention_effect(head, spaced if spatial else pooled, truth, scale, spaced_contributions, before)
    edited = head.logits(spaced if spatial else pooled, spaced_contributions, scale)
    accuracy_metrics(effect, len(truth))
    groups = group_section(held_out, paths, head.logits(pooled, contributions), edited, truth)
    summary_line(summary, effect, groups)
    class_table(class_accuracy_rows(truth, before, edited.argmax(dim=1), names))
    importance_table(ctx, prototype_importance(head, pooled, truth), labels)
    oracle_section(key, head, pooled, truth)


def accuracy_metrics(effect: dict, n_photos: int) -> None:
    before_col, after_col, changed_col = st.columns(3)
    before_col.metric("Top-1 before", f"{100 * effect['top1_before']:.1f} %")
    change = effect["top1_after"] - effect["top1_before"]
    after_col.metric("Top-1 after", f"{100 * effect['top1_after']:.1f} %", delta=f"{100 * change:+.1f} pts" if change else None)
    changed_col.metric("Predictions changed", f"{effect['predictions_changed']} / {n_photos}")


def group_section(
    held_out: HeldOut, paths: list[str], original: torch.Tensor, edited: torch.Tensor, truth: torch.Tensor
) -> tuple[dict, dict] | None:
    """Worst-group accuracy before and after, and every group's, when the data folder has groups.csv; the
    figures (before, after) of ``group_accuracy``, or None."""
    table = groups_table(held_out.data)
    if not table:
        return None
    groups = groups_of(paths, held_out.data, table)
    rows = torch.tensor([g is not None for g in groups], dtype=torch.bool)
    if not bool(rows.any()):
        st.caption("groups.csv lists none of these held-out photos: no accuracy per group.")
        return None
    listed = [g for g in groups if g is not None]
    before = evaluation.group_accuracy(original[rows], truth[rows], listed)
    after = evaluation.group_accuracy(edited[rows], truth[rows], listed)
    before_col, after_col, groups_col = st.columns(3)
    before_col.metric("Worst group before", f"{100 * before['worst_group']:.1f} %")
    change = after["worst_group"] - before["worst_group"]
    after_col.metric(
        "Worst group after", f"{100 * after['worst_group']:.1f} %", delta=f"{100 * change:+.1f} pts" if change else None
    )
    groups_col.metric("Groups", f"{len(after['per_group'])} · {int(rows.sum())} photos")
    percent = {c: st.column_config.NumberColumn(format="%.1f %%") for c in ("before", "after")}
    with st.expander("Accuracy per group (groups.csv)"):
        st.dataframe(
            pd.DataFrame(group_rows(before, after)).assign(
                before=lambda d: 100 * d["before"], after=lambda d: 100 * d["after"], change=lambda d: 100 * d["change"]
            ),
            hide_index=True,
            width="stretch",
            column_config={**percent, "change": st.column_config.NumberColumn(format="%+.1f pts")},
        )
    return before, after


def summary_line(summary, effect: dict, groups: tuple[dict, dict] | None) -> None:
    """One line beside the table: held-out top-1 (and worst group) before → after the edit."""
    text = f"**Held-out top-1** {100 * effect['top1_before']:.1f} % → **{100 * effect['top1_after']:.1f} %**"
    if groups:
        text += f" · **worst group** {100 * groups[0]['worst_group']:.1f} % → **{100 * groups[1]['worst_group']:.1f} %**"
    summary.markdown(text)


def class_table(rows: list[dict]) -> None:
    """Top-1 per held-out class before and after the edit (the classes that changed most first)."""
    st.markdown("**Accuracy per class**")
    table = pd.DataFrame(rows)
    for column in ("before", "after", "change"):
        table[column] = 100 * table[column]
    st.dataframe(
        table,
        hide_index=True,
        width="stretch",
        height=min(36 * (len(rows) + 1) + 3, 320),
        column_config={
            "before": st.column_config.NumberColumn(format="%.1f %%"),
            "after": st.column_config.NumberColumn(format="%.1f %%"),
            "change": st.column_config.NumberColumn(format="%+.1f pts"),
        },
    )


def importance_table(ctx: Context, importance: torch.Tensor, labels: list[int]) -> None:
    """Top-1 drop on the split when each prototype alone is switched off."""
    k = ctx.run.k
    rows = []
    for label in labels:
        c = ctx.decomposed.index(label)
        rows.append({"class": ctx.backbone.class_names[label], **{f"P{i + 1}": 100 * float(importance[c, i]) for i in range(k)}})
    st.markdown("**Importance of each prototype** (top-1 drop on this split when it alone is switched off)")
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        width="stretch",
        column_config={f"P{i + 1}": st.column_config.NumberColumn(format="%+.1f pts") for i in range(k)},
    )


def oracle_section(key: str, head, pooled: torch.Tensor, truth: torch.Tensor) -> None:
    st.markdown("##### Oracle experiment (the paper's Table 4)")
    st.caption(
        "In every wrong prediction whose predicted class was decomposed, zero that class's most important "
        "prototype for that photo only: how much could a perfect human-in-the-loop fix?"
    )
    oracle_key = f"oracle.{key}"
    if st.button("Run the oracle", icon=":material/science:"):
        st.session_state[oracle_key] = oracle_intervention(head, pooled, truth)
    oracle = st.session_state.get(oracle_key)
    if oracle:
        before_col, after_col, photos_col = st.columns(3)
        before_col.metric("Top-1 before", f"{100 * oracle['top1_before']:.1f} %")
        after_col.metric(
            "Top-1 with the oracle",
            f"{100 * oracle['top1_after']:.1f} %",
            delta=f"{100 * (oracle['top1_after'] - oracle['top1_before']):+.1f} pts",
        )
        photos_col.metric("Photos intervened on", oracle["intervened_images"])
