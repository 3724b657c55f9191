"""What the Mistakes page shows, without Streamlit: the cards of the mistakes one switch fixes, the harmful
prototypes' table, Table 4 both ways, and the session-state keys that open a mistake in Intervene."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from protolib.evaluation.mistakes import Mistakes
from protolib.explain import heatmap_overlay, upsample
from protolib.method.head import PrototypeHead
from protolib.runs import Run


@dataclass
class Card:
    """One mistake one switch fixes: the photo, the culprit (class label and prototype) and the top classes."""

    path: str
    label: int
    predicted: int
    culprit: tuple[int, int]  # (class label, prototype)
    margin: float
    top_before: list[tuple[int, float]]
    top_after: list[tuple[int, float]]

    @property
    def folder(self) -> str:
        return Path(self.path).parent.name

    @property
    def file(self) -> str:
        return Path(self.path).name


def cards(found: Mistakes, paths: list[str]) -> list[Card]:
    """The mistakes one switch fixes, the clearest (largest lead of the true class after the edit) first."""
    return [Card(paths[c.index], c.label, c.predicted, c.switched[0], c.margin, c.top_before, c.top_after) for c in found.by_one]


def culprit_title(run: Run, head: PrototypeHead, label: int, i: int) -> str:
    """``P2 “beak”`` or ``P2`` (not escaped: the page escapes it)."""
    name = run.prototype_name_grid()[head.position(label)][i]
    return f"P{i + 1}" + (f" “{name}”" if name else "")


def culprit_overlay(head: PrototypeHead, feats: np.ndarray, shown: np.ndarray, label: int, i: int) -> np.ndarray:
    """The culprit's heatmap f(x)·p̃ over the photo (its mean is the contribution switched off)."""
    maps = head.heatmaps(torch.from_numpy(np.asarray(feats))[None], head.position(label))[0, i]
    return heatmap_overlay(upsample(maps, shown.shape[:2]), shown)


def top_rows(names: list[str], top: list[tuple[int, float]], true: int) -> list[dict]:
    return [{"class": names[c] + (" ✓" if c == true else ""), "logit": v} for c, v in top]


def unexplained(found: Mistakes) -> dict[str, int]:
    """The mistakes one switch does not fix, by why: counted on the page, not hidden."""
    return {
        "fixed by two switches": found.count("two"),
        "a class above the true one was not decomposed": found.count("not_decomposed"),
        "more than two switches needed": found.count("more"),
    }


def harmful_rows(figures: dict, limit: int = 20) -> list[dict]:
    return [
        {"class": h["class"], "prototype": f"P{h['prototype'] + 1}", "fixed": h["fixed"], "broken": h["broken"], "net": h["net"]}
        for h in figures["harmful"][:limit]
    ]


def table4_rows(figures: dict) -> list[dict]:
    """The oracle both ways, per label space: top-1 before, with the paper's rule and with the smallest culprit."""
    spaces = [figures, *([figures["run_classes"]] if "run_classes" in figures else [])]
    return [
        {
            "label space": f["label_space"],
            "top-1": f["oracle_paper"]["top1_before"],
            "oracle (paper's rule)": f["oracle_paper"]["top1_after"],
            "smallest culprit, one switch": f["oracle_smallest"]["top1_after_one_switch"],
            "smallest culprit, one or two": f["oracle_smallest"]["top1_after"],
        }
        for f in spaces
    ]


def intervene_keys(card: Card, split: str, decomposed: list[int], data_source: str) -> dict:
    """The photo chooser's choices that make Intervene open on ``card``'s photo (``pickers.data_photo``) and the
    classes it edits there: the culprit's class, and the true class when it was decomposed."""
    classes = [card.culprit[0]] + ([card.label] if card.label in decomposed and card.label != card.culprit[0] else [])
    return {
        "img_source": data_source,
        "img_split": split,
        "img_class": card.folder,
        "img_file": card.file,
        f"iv_classes.{card.path}": classes,
    }
