"""The colours of what the project draws, in one place: the prototypes' own colours (pictures and charts
alike) and the colours of the charts (the app's and the report's plotly charts, the command line's figure),
named by what they stand for. The report's style sheet keeps its page colours (text, borders) to itself."""

from __future__ import annotations

# Distinct, colour-blind-friendly colours (Okabe-Ito, then Tableau) for up to 20 prototypes.
PALETTE = [
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
    (213, 94, 0), (204, 121, 167), (150, 150, 150), (31, 119, 180), (255, 127, 14),
    (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194),
    (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
]  # fmt: skip


def prototype_colour(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def prototype_hex(i: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*prototype_colour(i))


# -- the charts' colours ---------------------------------------------------------------------------
TEAL = "#0f6e8c"  # the main series: the run, the method's result, "after"
CORAL = "#e76f51"  # its contrast: the paper's rule, Grad-CAM, the head error, the lowest value
SAND = "#e9c46a"
SAGE = "#8ab17d"
GREY = "#b0bec5"  # "before", the baseline
SLATE = "#9aa5b1"  # the random floor
NAVY = "#1d3557"  # marks drawn over bars
INK = "#264653"  # totals and chosen values
GREEN = "#2a9d8f"  # rises
PURPLE = "#8d6cab"
OTHER = "#888"  # a series no table below names
PROBABILITY = "#4c72b0"  # the command line's explanation figure: the top-5 probabilities

STRATEGY_COLOURS = {"optimized": TEAL, "paper": CORAL, "uniform": SAND, "proportional": SAGE}
#: the saliency maps of the deletion / insertion curves (``report.build_faithfulness.SALIENCY_MAPS``)
SALIENCY_COLOURS = {"refined heatmap": TEAL, "NMF part map": SAND, "Grad-CAM": CORAL, "random": SLATE}
#: the head rows of the paper's Table 3
HEAD_ROWS_COLOURS = {"prototypes only": SAND, "residual only": SAGE, "both": TEAL}
#: runs side by side, in order
RUN_COLOURS = (TEAL, CORAL, SAGE)
