"""What a report is made of: its sections, in order, the report itself (figures + images), and what a section
that could not be computed holds instead."""

from __future__ import annotations

from dataclasses import dataclass, field

SECTIONS = {
    "exactness": "Exactness",
    "table3": "Prototypes and residual against k (Table 3, Figure 5)",
    "refinement": "Refinement keeps the heatmaps",
    "seed_stability": "Stability across NMF seeds",
    "protoeval": "Part consistency and stability (ProtoEval)",
    "axioms": "Explainability axioms",
    "deletion_insertion": "Deletion and insertion against Grad-CAM",
    "intervention": "Intervention",
    "mistakes": "Mistakes and their culprits (Table 4 both ways)",
}
#: sections a report has only when its settings ask for them (``ReportSettings.compare_with``), after the others
OPTIONAL_SECTIONS = {
    "comparison": "Runs side by side on the same photos (Figure 3)",
}


@dataclass
class Report:
    figures: dict  # what report.json holds: numbers and text only
    images: dict[str, str] = field(default_factory=dict)  # name -> base64 PNG, shown in the HTML only


def not_computed(reason: str) -> dict:
    """A section that could not be made, with the reason the page shows in its place."""
    return {"available": False, "reason": reason}
