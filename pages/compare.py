"""Compare: two or three runs side by side on the same held-out photos of one class (the paper's Figure 3):
each run's part maps and heatmaps, contributions and shares, its prototypes matched to the others', the
agreement, and the photos where the runs disagree most; exported as one PNG or an HTML page."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.common import cache, figures, navigation
from pages.common.compare_views import (
    agreement_reading,
    comparable_runs,
    compare_defaults,
    contribution_table,
    match_table,
    photo_label,
)
from pages.common.run_context import photos_folder
from pages.common.sidebar import runs_by_name
from pages.common.state import kept
from protolib import charts
from protolib.backbones import BackboneError
from protolib.data import BadImage, DataError
from protolib.evaluation.compare import (
    AMBIGUOUS_MARGIN,
    MAPS,
    MAX_RUNS,
    CompareError,
    Comparison,
    compare_runs,
    shared_classes,
)
from protolib.evaluation.compare_figure import comparison_png
from protolib.report import Report
from protolib.report.build_comparison import comparison_figures
from protolib.report.html import render_comparison
from protolib.runs import RunError
from protolib.runs.listing import SavedRun

SPLIT = "val"


@st.cache_resource(max_entries=4, show_spinner="Comparing the runs on the photos…")
def comparison_of(
    key: str, _runs, _backbones, _heads, names: tuple, data: str, class_name: str, photos: int, maps: str
) -> Comparison:
    """A comparison, shared between sessions (``key`` names the run versions and the device)."""
    return compare_runs(_runs, _backbones, data, class_name, SPLIT, photos, list(names), _heads, maps=maps)


@st.cache_data(max_entries=8, show_spinner="Drawing the PNG…")
def png_of(key: str, photo: int, _comparison: Comparison) -> bytes:
    return comparison_png(_comparison, [photo])


def pick_runs(runs: dict[str, SavedRun]) -> list[str]:
    """Two or three runs, the session's run and another sharing a class with it to start with."""
    names = comparable_runs(runs)
    return kept(
        st.multiselect,
        "Runs side by side",
        "cmp_runs",
        compare_defaults(runs, st.session_state.get("run")),
        options=names,
        max_selections=MAX_RUNS,
        help="Two or three saved runs that decomposed a common class: other backbones, other k, other strategies, "
        "probes of your own data.",
    )


def controls(shared: list) -> tuple[str, int, str]:
    """The class (among those the runs share), the number of photos, and what prototypes are matched on."""
    class_col, photos_col, maps_col = st.columns([3, 1, 2])
    with class_col:
        names = [c.name for c in shared]
        class_name = kept(
            st.selectbox,
            "Class",
            "cmp_class",
            names[0],
            options=names,
            help="The classes every chosen run decomposed (matched by class folder, else by name).",
        )
    with photos_col:
        photos = kept(
            st.number_input,
            "Held-out photos",
            "cmp_photos",
            8,
            min_value=2,
            max_value=32,
            step=1,
            help=f"Photos of the class from the data folder's {SPLIT}/ that no chosen run was trained on.",
        )
    with maps_col:
        maps = kept(
            st.radio,
            "Match prototypes on",
            "cmp_maps",
            "heatmaps",
            options=list(MAPS),
            horizontal=True,
            format_func=lambda m: {"heatmaps": "heatmaps f·p̃", "coefficients": "coefficient maps"}[m],
            help="Heatmaps are the maps shown; two prototypes of one run often share most of theirs (where the "
            "features are strong), so matches can be near ties. Coefficient maps f·pinv(P̃) read the prototypes "
            "together and separate them.",
        )
    return class_name, int(photos), maps


def load_comparison(runs: dict[str, SavedRun], chosen: list[str], class_name: str, photos: int, maps: str) -> Comparison:
    """Each run with the model it was made from and its head (cached), compared on the photos; a message
    and a stop when something cannot be used."""
    device = st.session_state.get("device", "cpu")
    loaded, backbones, heads, keys = [], [], [], []
    for name in chosen:
        saved = runs[name]
        try:
            run = cache.get_run(str(saved.path), saved.modified)
            backbone = cache.get_backbone(run.manifest["backbone"], run.manifest.get("weights"), device)
            run.check_backbone(backbone)
        except (RunError, BackboneError, OSError) as exc:
            st.error(figures.md(f"Run “{name}” cannot be used: {exc}"))
            st.stop()
        key = f"{saved.path}|{saved.modified}|{device}"
        loaded.append(run)
        backbones.append(backbone)
        heads.append(cache.get_head(key, run, backbone))
        keys.append(key)
    data = photos_folder(loaded[0])[0]  # the first run's own photos, unless the sidebar names a folder
    try:
        return comparison_of("||".join(keys), loaded, backbones, heads, tuple(chosen), data, class_name, photos, maps)
    except (CompareError, DataError, BadImage, OSError) as exc:
        st.error(figures.md(f"The runs cannot be compared on “{class_name}”: {exc}"))
        st.stop()


def summary(c: Comparison) -> None:
    """The agreement, per pair of runs, and the matched prototypes table."""
    cols = st.columns(1 + len(c.pairs))
    cols[0].metric(
        "Agreement",
        f"{c.agreement:.2f}",
        help="Mean matched correlation over the pairs of runs: 1 = the runs point at the same parts on these photos.",
    )
    for col, pair in zip(cols[1:], c.pairs):
        col.metric(f"{c.sides[pair.a].name} ↔ {c.sides[pair.b].name}", f"{pair.agreement:.2f}")
    st.caption(
        f"On these {len(c.photos)} photos {agreement_reading(c.agreement)}. Prototypes are matched one to one "
        f"(Hungarian assignment) by the correlation of their {MAPS[c.maps]}, upsampled to one grid."
    )
    st.markdown("##### Matched prototypes")
    st.dataframe(
        pd.DataFrame(match_table(c.match_rows(), AMBIGUOUS_MARGIN)),
        hide_index=True,
        width="stretch",
        column_config={
            "r": st.column_config.NumberColumn(format="%.2f"),
            "match": st.column_config.TextColumn(width="large"),
            "reading": st.column_config.TextColumn(width="large"),
        },
    )


def side_by_side(c: Comparison) -> int:
    """One photo (the most disagreeing first): per run its part map and heatmaps, lined up with the first
    run's matched prototypes. Returns the photo shown."""
    order = c.per_photo.argsort().tolist()
    photo = kept(
        st.selectbox,
        "Photo",
        "cmp_photo",
        order[0],
        options=order,
        format_func=lambda i: photo_label(i, c.photos[i], float(c.per_photo[i])),
        help="Sorted from the photo where the runs disagree most.",
    )
    columns = [c.columns(s) for s in range(len(c.sides))]
    width = 1 + max(len(col) for col in columns)
    st.caption(
        f"Columns line up with the prototypes of {figures.md(c.sides[0].name)}: under each heatmap of another run, “↔ P2” "
        "names the prototype it is matched to, with the correlation r of their maps over all the photos."
    )
    for s, side in enumerate(c.sides):
        st.markdown(f"**{figures.md(side.title)}** · logit {side.logit:.2f} on average")
        cells = st.columns(width)
        with cells[0]:
            note = figures.part_map_note(side.presence_damping)
            st.image(side.part_map_image(photo), caption=f"part map ({note})", width="stretch")
        for col, i in enumerate(columns[s]):
            if i is None:
                continue
            with cells[col + 1]:
                st.image(side.heatmap_image(photo, i), width="stretch")
                text = f"P{i + 1}: <b>{float(side.mean_contribution[i]):+.2f}</b> ({100 * float(side.shares[i]):.0f} %)"
                st.markdown(figures.chip(i, text), unsafe_allow_html=True)
                if s > 0 and col < c.sides[0].k:
                    partner = next(p for p in c.pairs if p.a == 0 and p.b == s).partner(col)
                    st.caption(f"↔ P{col + 1}, r = {partner[1]:.2f}" if partner else "no match")
                elif s > 0:
                    st.caption(f"no counterpart in {figures.md(c.sides[0].name)}")
    return photo


def contributions(c: Comparison) -> None:
    st.markdown("##### Contributions and shares")
    st.caption(
        "Each prototype's mean contribution to the class's logit over the photos; the label is its share of "
        "the evidence (|contribution| over the sum of all the run's)."
    )
    st.plotly_chart(charts.contribution_bars(contribution_table(c.sides)), width="stretch", config=figures.PLAIN)


def disagreeing(c: Comparison) -> None:
    st.markdown("##### Where the runs disagree")
    lowest = c.disagreeing(3)
    st.caption("Each photo's agreement: the mean matched correlation on that photo alone. Lowest in red.")
    st.plotly_chart(
        charts.photo_agreement_bars([f"photo {i + 1}" for i in range(len(c.photos))], c.per_photo.tolist(), lowest),
        width="stretch",
        config=figures.PLAIN,
    )
    cols = st.columns(len(lowest))
    for col, i in zip(cols, lowest):
        col.image(c.sides[0].images[i], caption=figures.md(photo_label(i, c.photos[i], float(c.per_photo[i]))), width="stretch")


def export(c: Comparison, key: str, photo: int) -> None:
    """The comparison as one PNG (the photo shown) and as an HTML page."""
    st.markdown("##### Export")
    name = f"compare-{'-'.join(s.name for s in c.sides)}-{c.class_name}".replace(" ", "_")[:120]
    png_col, html_col = st.columns(2)
    png_col.download_button(
        "Download as PNG",
        png_of(key, photo, c),
        file_name=f"{name}.png",
        mime="image/png",
        icon=":material/image:",
        width="stretch",
    )
    built = st.session_state.get("cmp_html")  # (key, page): only the latest comparison's page is kept
    if built is None or built[0] != key:
        if html_col.button("Build the HTML page", icon=":material/description:", width="stretch"):
            images: dict[str, str] = {}
            section = comparison_figures([c], images)
            st.session_state["cmp_html"] = (key, render_comparison(Report({"comparison": section}, images)))
            st.rerun()
    else:
        html_col.download_button(
            "Download the HTML page",
            built[1],
            file_name=f"{name}.html",
            mime="text/html",
            icon=":material/download:",
            width="stretch",
        )
    st.caption(
        "The same comparison is a section of the evaluation report: on **Evaluate**, choose the runs to compare "
        "with before building it."
    )


# -- the page --------------------------------------------------------------------------------------
navigation.entry()
st.title("Compare")
st.caption(
    "Two or three runs on the same held-out photos of one class, each through its own backbone: where their "
    "prototypes look, how much each adds to the logit, and which prototypes of one run are the other's."
)
runs = runs_by_name()
if len(comparable_runs(runs)) < 2:
    st.info(
        "Compare needs two runs that decomposed a common class: make another on **Decompose** (another backbone, "
        "another k or another strategy)."
    )
    st.page_link(navigation.DECOMPOSE, label="Go to Decompose", icon=":material/arrow_forward:")
    st.stop()
chosen = pick_runs(runs)
if len(chosen) < 2:
    st.info("Choose two or three runs.")
    st.stop()
shared = shared_classes([runs[n].manifest for n in chosen])
if not shared:
    st.error(
        "These runs share no class, so they cannot be compared on the same photos: "
        + "; ".join(f"{n} has {', '.join(c['name'] for c in runs[n].manifest['classes'][:8])}" for n in chosen)
    )
    st.stop()
class_name, n_photos, maps = controls(shared)
comparison = load_comparison(runs, chosen, class_name, n_photos, maps)
comparison_key = f"{'||'.join(str(runs[n].path) + str(runs[n].modified) for n in chosen)}|{class_name}|{n_photos}|{maps}"
summary(comparison)
st.divider()
shown = side_by_side(comparison)
st.divider()
contributions(comparison)
disagreeing(comparison)
st.divider()
export(comparison, comparison_key, shown)
