"""What the pages draw the same way: text from data made literal for Streamlit (``md``), prototype colour
chips and the legend, and the table of skipped files. The charts themselves are ``protolib.charts``."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from pages.common.viewmodels import problem_rows
from protolib.palette import prototype_hex

#: the caption every part map carries: part maps come from the NMF parts, the rest from refined prototypes
PART_MAP_NOTE = "NMF parts, before refinement"


def part_map_note(presence_damping: float) -> str:
    """:data:`PART_MAP_NOTE`, and how the run's part maps read a cell when not as the paper's do."""
    if not presence_damping:
        return PART_MAP_NOTE
    return f"{PART_MAP_NOTE}, loudness damped: ‖f‖^{1 - presence_damping:g} · cos(f, part)"


PLAIN = {"displayModeBar": False}  # the plotly config of every chart a page draws


_MARKUP = re.compile(r"([\\`*_\[\]<>!|~$#&@])")
_AUTOLINK = re.compile(r"(?i)(?<=[a-z])(?=://)|(?<=www)(?=\.)|(?=:[a-z])")  # http://, www., :red[ / :emoji:


def md(text: object) -> str:
    """Text from data (a class name, a prototype's label, a file name, an error naming them) as literal text in
    Streamlit markdown, captions, tab and metric labels, and in markdown with ``unsafe_allow_html`` (there ``\\<``
    is a literal ``<``, where ``html.escape`` would leave ``![x](url)`` to markdown). The characters that start
    links, images, HTML, emphasis, math and directives are escaped (``[``, ``!``, ``<``, ``*``, ``$``,
    ``:red``…), bare ``http://`` and ``www.`` are kept from becoming links, and line breaks are flattened: a name
    is shown, never followed or fetched."""
    return _AUTOLINK.sub("\\\\", _MARKUP.sub(r"\\\1", " ".join(str(text).split())))


def chip(i: int, text: str | None = None) -> str:
    """An HTML colour swatch with the prototype's name."""
    label = text if text is not None else f"P{i + 1}"
    return (
        f'<span style="display:inline-flex;align-items:center;gap:.35em;margin-right:.9em">'
        f'<span style="width:.95em;height:.95em;border-radius:3px;background:{prototype_hex(i)};'
        f'display:inline-block;border:1px solid rgba(0,0,0,.15)"></span>{label}</span>'
    )


def legend(k: int, prefix: str = "", names: Sequence[str] = ()) -> None:
    """The prototypes' colours, with their labels (``names``, "" when unnamed) when they have them."""
    titles = [f"Prototype {i + 1}" + (f" · {md(names[i])}" if i < len(names) and names[i] else "") for i in range(k)]
    st.markdown(prefix + "".join(chip(i, title) for i, title in enumerate(titles)), unsafe_allow_html=True)


def named(label: str) -> str:
    """A prototype's label as HTML to put before its numbers (``“fins” · ``), or "" when it has none."""
    return f"<b>“{md(label)}”</b> · " if label else ""


def problems_table(problems: Sequence, title: str) -> None:
    """Skipped files and folders, listed for the user."""
    if not problems:
        return
    with st.expander(f"{title}: {len(problems)}", icon=":material/warning:"):
        st.dataframe(pd.DataFrame(problem_rows(problems)), hide_index=True, width="stretch")
