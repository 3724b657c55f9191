"""Intervene: switch prototypes off or scale them, on one photo and on the whole held-out split.

Contributions are linear in the pooled features, so every change here is computed from cached
contributions (an st.fragment that never reruns the backbone).
"""

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import ui
from protolib import appstate
from protolib.metrics import among_decomposed, intervention_effect, oracle_intervention, prototype_importance
from protolib.runs import RunError, save_run

ui.entry()
st.title("Intervene")
st.caption(
    "Switch a prototype off (or scale it) and the class's logit loses that part's contribution: a test-time "
    "edit of the model that needs no retraining and no second pass through the backbone."
)
ctx = ui.require_run()
run, head = ctx.run, ctx.head
state = st.session_state

picked = ui.image_picker(ctx)
if picked is None:
    st.stop()
pooled = picked.feats.mean(dim=(0, 1)).unsqueeze(0)  # (1, D): all an intervention needs
contributions = head.contributions(pooled)
original = head.logits(pooled, contributions)[0]
decomposed = [int(c) for c in head.classes]
position_of = {c: i for i, c in enumerate(decomposed)}
predicted = int(original.argmax())
first = predicted if predicted in position_of else decomposed[int(original[head.classes].argmax())]


def setting_names(label: int, i: int) -> tuple[str, str]:
    return f"iv.{ctx.key}.{label}.{i}.on", f"iv.{ctx.key}.{label}.{i}.scale"


def reset_all() -> None:
    for label in decomposed:
        for i in range(run.k):
            on, scale = setting_names(label, i)
            state[on], state[scale] = True, 1.0


def current_scale(labels: list[int]):
    """The (C, k) intervention set by the controls of the classes being edited (what is shown is
    what applies)."""
    settings = {}
    for label in labels:
        for i in range(run.k):
            on, scale = setting_names(label, i)
            value = float(state.get(scale, 1.0)) if state.get(on, True) else 0.0
            if value != 1.0:
                settings[(position_of[label], i)] = value
    return appstate.scale_matrix(len(decomposed), run.k, settings)


def controls(labels: list[int]) -> None:
    for label in labels:
        c = position_of[label]
        with st.container(border=True):
            st.markdown(
                f"**{ctx.labels[label]}** · logit {float(original[label]):.2f} on this photo", unsafe_allow_html=True
            )
            for i in range(run.k):
                on_name, scale_name = setting_names(label, i)
                chip_col, on_col, scale_col = st.columns([3, 1, 3], vertical_alignment="center")
                with chip_col:
                    st.markdown(
                        ui.chip(i, f"<b>P{i + 1}</b>&nbsp;<small>α&nbsp;{float(run.alpha[c, i]):+.3f}</small>")
                        + f"<br><small>contribution {float(contributions[0, c, i]):+.2f}</small>",
                        unsafe_allow_html=True,
                    )
                with on_col:
                    on = ui.kept(st.toggle, f"P{i + 1} on", on_name, True, label_visibility="collapsed")
                with scale_col:
                    ui.kept(
                        st.slider, f"Scale of P{i + 1}", scale_name, 1.0, min_value=0.0, max_value=2.0, step=0.05,
                        disabled=not on, label_visibility="collapsed",
                    )


def results(edited, labels: list[int]) -> None:
    label = labels[0]
    new_predicted = int(edited.argmax())
    image, a, b = st.columns([1, 1.2, 1.6], vertical_alignment="center")
    image.image(picked.shown, width="stretch")
    a.metric(
        f"Logit of “{ctx.labels[label]}”", f"{float(edited[label]):.2f}",
        delta=f"{float(edited[label] - original[label]):+.2f}" if float(edited[label] - original[label]) else None,
    )
    with b:
        st.markdown(
            f"<small>Predicted class</small><br><span style='font-size:1.5rem'>{ctx.labels[new_predicted]}</span>",
            unsafe_allow_html=True,
        )
        if new_predicted != predicted:
            st.badge(f"changed from {ctx.labels[predicted]}", icon=":material/swap_horiz:", color="orange")
        else:
            st.badge("unchanged", icon=":material/check:", color="gray")
    rows = appstate.top_logit_rows(ctx.labels, original, edited, 5, decomposed, include=labels)
    table = pd.DataFrame(rows)[["rank", "class", "logit", "original logit", "change", "probability"]]

    def highlight(row):
        colour = "background-color: rgba(231,111,81,.18)" if abs(row["change"]) > 1e-9 else ""
        return [colour] * len(row)

    st.dataframe(
        table.style.apply(highlight, axis=1).format(
            {"logit": "{:.2f}", "original logit": "{:.2f}", "change": "{:+.2f}", "probability": "{:.1%}"}
        ),
        hide_index=True,
        width="stretch",
    )
    shown = list(dict.fromkeys([r["class"] for r in rows] + [ctx.labels[int(c)] for c in original.topk(5).indices]))
    index = {name: i for i, name in enumerate(ctx.labels)}
    fig = go.Figure(
        [
            go.Bar(name="original", y=shown, x=[float(original[index[n]]) for n in shown], orientation="h",
                   marker_color="#b0bec5"),
            go.Bar(name="edited", y=shown, x=[float(edited[index[n]]) for n in shown], orientation="h",
                   marker_color="#0f6e8c"),
        ]
    )
    fig.update_layout(
        barmode="group", height=80 + 34 * len(shown), margin={"l": 10, "r": 10, "t": 10, "b": 10},
        yaxis={"autorange": "reversed"}, xaxis={"title": "logit"}, legend={"orientation": "h", "y": -0.25},
    )
    st.plotly_chart(fig, width="stretch", config={"displayModeBar": False})


@st.cache_resource(max_entries=4, show_spinner=False)
def split_baseline(key: str, _head, _pooled):
    """The held-out split's contributions and unedited predictions, computed once per run and split
    so that each edit costs one weighted sum (read only: shared between sessions)."""
    contributions = _head.contributions(_pooled)
    return contributions, _head.logits(_pooled, contributions).argmax(dim=1)


def held_out(scale, labels: list[int]) -> None:
    st.markdown("##### The same intervention on the held-out split")
    settings = ui.val_controls(ctx)
    sf = ui.val_features(ctx, settings, compute=False)
    if sf is None:
        st.caption("The held-out photos pass through the backbone once; afterwards every change here is instant.")
        if st.button("Compute held-out features", icon=":material/dataset:"):
            sf = ui.val_features(ctx, settings, compute=True)
        if sf is None:
            return
    among = ui.kept(
        st.toggle, "Classify among the run's classes only", "val_among_run", False,
        help="As in the paper, which decomposes every class: the model chooses between the run's classes only. "
        "Otherwise it keeps all its classes, and a mistake towards a class outside the run cannot be undone "
        "by editing the run's prototypes.",
    )
    edited, pooled, truth, names = head, sf.pooled, sf.labels, ctx.labels
    if among:
        edited, pooled, truth = among_decomposed(head, sf.pooled, sf.labels)
        names = ctx.class_names
        if not len(truth):
            st.info("None of these held-out photos belongs to one of the run's classes.")
            return
    contributions, before = split_baseline(f"{ctx.key}.{settings}.{among}", edited, pooled)
    effect = intervention_effect(edited, pooled, truth, scale, contributions, before)
    a, b, c = st.columns(3)
    a.metric("Top-1 before", f"{100 * effect['top1_before']:.1f} %")
    b.metric(
        "Top-1 after", f"{100 * effect['top1_after']:.1f} %",
        delta=f"{100 * (effect['top1_after'] - effect['top1_before']):+.1f} pts"
        if effect["top1_after"] != effect["top1_before"] else None,
    )
    c.metric("Predictions changed", f"{effect['predictions_changed']} / {len(truth)}")
    gained, lost = appstate.gains_and_losses(effect["per_class_change"], names)
    g, lo = st.columns(2)
    points = {"accuracy change": st.column_config.NumberColumn("accuracy change", format="%+.1f pts")}
    with g:
        st.markdown("**Classes that gained**")
        if gained:
            st.dataframe(pd.DataFrame(gained).assign(**{"accuracy change": lambda d: 100 * d["accuracy change"]}),
                         hide_index=True, width="stretch", column_config=points)
        else:
            st.caption("none")
    with lo:
        st.markdown("**Classes that lost**")
        if lost:
            st.dataframe(pd.DataFrame(lost).assign(**{"accuracy change": lambda d: 100 * d["accuracy change"]}),
                         hide_index=True, width="stretch", column_config=points)
        else:
            st.caption("none")

    importance = prototype_importance(edited, pooled, truth)
    st.markdown("**Importance of each prototype** (top-1 drop on this split when it alone is switched off)")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "class": ctx.labels[label],
                    **{f"P{i + 1}": 100 * float(importance[position_of[label], i]) for i in range(run.k)},
                }
                for label in labels
            ]
        ),
        hide_index=True,
        width="stretch",
        column_config={f"P{i + 1}": st.column_config.NumberColumn(format="%+.1f pts") for i in range(run.k)},
    )

    st.markdown("##### Oracle experiment (the paper's Table 4)")
    st.caption(
        "In every wrong prediction whose predicted class was decomposed, zero that class's most important "
        "prototype for that photo only: how much could a perfect human-in-the-loop fix?"
    )
    oracle_key = f"oracle.{ctx.key}.{settings}.{among}"
    if st.button("Run the oracle", icon=":material/science:"):
        state[oracle_key] = oracle_intervention(edited, pooled, truth)
    oracle = state.get(oracle_key)
    if oracle:
        a, b, c = st.columns(3)
        a.metric("Top-1 before", f"{100 * oracle['top1_before']:.1f} %")
        b.metric(
            "Top-1 with the oracle", f"{100 * oracle['top1_after']:.1f} %",
            delta=f"{100 * (oracle['top1_after'] - oracle['top1_before']):+.1f} pts",
        )
        c.metric("Photos intervened on", oracle["intervened_images"])


def save(scale) -> None:
    st.markdown("##### Save the edited head")
    note = appstate.describe_scale(scale, ctx.class_names)
    name_col, button_col = st.columns([3, 1], vertical_alignment="bottom")
    with name_col:
        name = ui.kept(st.text_input, "New run name", f"iv_name.{ctx.key}", f"{ctx.name}-edited")
    with button_col:
        clicked = st.button(
            "Save as a new run", icon=":material/save:", disabled=note == "no change", width="stretch"
        )
    st.caption(f"Intervention: {note}")
    if clicked:
        try:
            path = save_run(run.with_scale(scale, note), appstate.unique_run_path(appstate.runs_dir(), name))
        except (RunError, ValueError, OSError) as exc:
            st.error(f"Could not save: {exc}")
            return
        state["iv_saved"] = path.name
    if state.get("iv_saved"):
        saved = state["iv_saved"]
        st.success(f"Saved as run “{saved}”.", icon=":material/check_circle:")
        if st.button(f"Open “{saved}”"):
            state.pop("iv_saved")
            ui.select_run(saved)
            st.rerun(scope="app")


@st.fragment
def live() -> None:
    labels = ui.kept(
        st.multiselect, "Classes to edit", f"iv_classes.{picked.key}", [first], options=decomposed,
        format_func=lambda c: ctx.labels[c] + ("  (predicted)" if c == predicted else ""),
    )
    if not labels:
        st.info("Choose at least one decomposed class to edit.")
        return
    left, right = st.columns([5, 6], gap="large")
    with left:
        st.markdown("##### Prototypes: on/off and scale")
        controls(labels)
        st.button("Reset all", icon=":material/restart_alt:", on_click=reset_all)
    scale = current_scale(labels)
    edited = head.logits(pooled, contributions, scale)[0]
    with right:
        st.markdown("##### This photo")
        results(edited, labels)
    st.divider()
    held_out(scale, labels)
    st.divider()
    save(scale)


live()
