"""How much work a report does: ``ReportSettings``, checked when made (bad settings fail before any work)."""

from __future__ import annotations

from dataclasses import dataclass

from ..evaluation.compare import MAPS, MAX_RUNS
from ..method.refine import MAX_K

TABLE3_KS = (1, 3, 5, 10)


@dataclass(frozen=True)
class ReportSettings:
    """How much work the report does; the defaults build a 10-class report in a few CPU minutes."""

    split: str = "val"
    images_per_class: int | None = None  # held-out images per class (None: all)
    ks: tuple[int, ...] = TABLE3_KS
    seeds: int = 3  # NMF seeds compared (the run's own and seeds - 1 more)
    examples: int = 3  # images whose heatmaps are shown before and after refinement
    faithfulness_images: int = 100  # held-out images of the deletion / insertion curves
    steps: int = 8  # points of each deletion / insertion curve, after the first
    protoeval_images_per_class: int | None = None
    keypoints: str | None = None  # a CUB root or a folder with keypoints.csv (default: the data folder)
    compare_with: tuple[str, ...] = ()  # other run folders shown side by side with this run ("comparison")
    compare_class: str | None = None  # the class they are compared on (default: every class they share)
    compare_photos: int = 6  # held-out photos of each compared class
    compare_maps: str = "heatmaps"  # what prototypes are matched on (protolib.evaluation.compare.MAPS)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compare_with", tuple(str(p) for p in self.compare_with))  # JSON-able
        if len(self.compare_with) > MAX_RUNS - 1:
            raise ValueError(f"compare_with: at most {MAX_RUNS - 1} other runs ({MAX_RUNS} side by side)")
        if self.compare_photos < 1:
            raise ValueError("compare_photos must be at least 1")
        if self.compare_maps not in MAPS:
            raise ValueError(f"compare_maps={self.compare_maps!r}: choose one of {', '.join(MAPS)}")
        if self.seeds < 2:
            raise ValueError(f"seeds={self.seeds}: stability needs at least 2 NMF seeds to compare")
        if self.steps < 1 or self.faithfulness_images < 1:
            raise ValueError("deletion/insertion needs at least 1 image and 1 step")
        if not self.ks or any(not 1 <= k <= MAX_K for k in self.ks):
            raise ValueError(f"k values {self.ks} must lie in 1..{MAX_K}")
