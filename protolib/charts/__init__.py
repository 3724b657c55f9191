"""The charts the app and the report both draw, built once: plotly figures from a run's figures.
Colours come from ``protolib.palette``; text from data is escaped here (``text.escaped``)."""

from .contributions import contribution_bars, importance_heatmap, logit_bars, oracle_bars, photo_agreement_bars, waterfall
from .evaluation import (
    class_bars,
    errors_against_k,
    fidelity_bars,
    k_choice_chart,
    protoeval_bars,
    saliency_curves,
    table3_bars,
    table3_by_k,
)
from .text import escaped, percent, prototype_title

__all__ = [
    "class_bars",
    "contribution_bars",
    "errors_against_k",
    "escaped",
    "fidelity_bars",
    "importance_heatmap",
    "k_choice_chart",
    "logit_bars",
    "oracle_bars",
    "percent",
    "photo_agreement_bars",
    "protoeval_bars",
    "prototype_title",
    "saliency_curves",
    "table3_bars",
    "table3_by_k",
    "waterfall",
]
