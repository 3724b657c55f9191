"""Runs compared with each other side by side on the same photos of one class (the paper's Figure 3).

**Side by side.** Two or three runs (other backbones, other k, other refinement strategies, probes)
that decomposed the same class are shown the same held-out photos. Each run sees them through its own
backbone: its part maps, its prototype heatmaps ``f(x) . p~_i``, each prototype's contribution and share
of the logit. Prototypes are matched across runs by how alike their heatmaps are on those photos: every
heatmap is upsampled to one common grid (backbones differ in resolution), the Pearson correlation of two
prototypes is taken over all photos' positions, and the Hungarian assignment pairs them so that the summed
correlation is largest (``matching.py``). The
*agreement* is the mean matched correlation; a photo's agreement is the same mean on that photo alone,
so the lowest are the photos where the runs read the class most differently.

Classes are matched by their folder, else by their name (case aside), from the runs' manifests: never
by label index alone, so runs of a probe and runs of an ImageNet model of the same photos meet.

The comparison as a figure: ``compare_figure.py``. Which k the data supports: ``k_choice.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backbones import Backbone
from ..data import DataError, load_image, split_dir, split_images
from ..data.features import CacheDir, extract_features
from ..explain import heatmap_overlay, part_map, upsample
from ..method.discovery import DEFAULT_DISCOVERY, DISCOVERY_LABELS
from ..method.head import PrototypeHead
from ..runs import Run
from ..runs.names import short_backbone
from .matching import COMMON_GRID, PairMatching, match_pair

#: at most this many runs side by side (the paper's Figure 3 shows three)
MAX_RUNS = 3
#: what prototypes are matched on. "heatmaps": f . p~_i, the maps shown (their contributions' maps). They share
#: a large common component (where the features are strong), so two prototypes of one run often correlate
#: above 0.9 and a match can be close to a tie (see ``PairMatching.margins``). "coefficients": f . pinv(P~),
#: each position's features written as a combination of all k prototypes together, which separates them.
MAPS = {
    "heatmaps": "prototype heatmaps f·p̃ (the maps shown)",
    "coefficients": "coefficient maps f·pinv(P̃) (the prototypes read together: separates prototypes that share a common component)",
}
#: a match whose r beats the next candidate by less than this is called ambiguous
AMBIGUOUS_MARGIN = 0.05


class CompareError(ValueError):
    """The runs cannot be compared on this class (the message names the classes they share)."""


# -- which class the runs share -----------------------------------------------------------------------
@dataclass(frozen=True)
class SharedClass:
    """One class that every compared run decomposed: its name, and per run its folder and position."""

    name: str  # as the first run names it
    folders: tuple[str, ...]
    positions: tuple[int, ...]  # index among each run's decomposed classes
    names: tuple[str, ...] = ()  # as each run names it

    def matches(self, text: str) -> bool:
        wanted = text.strip().casefold()
        return wanted in {self.name.casefold(), *(n.casefold() for n in self.names), *(f.casefold() for f in self.folders)}


def _same_class(a: Mapping, b: Mapping) -> bool:
    return a["folder"] == b["folder"] or str(a["name"]).casefold() == str(b["name"]).casefold()


def _names(manifest: Mapping) -> str:
    names = [c["name"] for c in manifest.get("classes", [])]
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "") or "no class"


def shared_classes(manifests: Sequence[Mapping]) -> list[SharedClass]:
    """The classes every run of ``manifests`` decomposed, in the first run's order."""
    if not manifests:
        return []
    shared = []
    for position, entry in enumerate(manifests[0]["classes"]):
        found = [(position, entry)]
        for manifest in manifests[1:]:
            hit = next(((p, e) for p, e in enumerate(manifest["classes"]) if _same_class(entry, e)), None)
            if hit is None:
                break
            found.append(hit)
        else:
            shared.append(
                SharedClass(
                    entry["name"],
                    tuple(e["folder"] for _, e in found),
                    tuple(p for p, _ in found),
                    tuple(str(e["name"]) for _, e in found),
                )
            )
    return shared


def find_shared_class(manifests: Sequence[Mapping], wanted: str, names: Sequence[str]) -> SharedClass:
    """The shared class ``wanted`` (a name or a folder); CompareError naming the shared classes otherwise."""
    shared = shared_classes(manifests)
    if not shared:
        each = "; ".join(f"{n} has {_names(m)}" for n, m in zip(names, manifests))
        raise CompareError(f"the runs share no class, so they cannot be compared on the same photos ({each})")
    for c in shared:
        if c.matches(wanted):
            return c
    lacking = [
        n
        for n, m in zip(names, manifests)
        if not any(wanted.strip().casefold() in {str(e["name"]).casefold(), e["folder"].casefold()} for e in m["classes"])
    ]
    who = (
        f"{' and '.join(lacking)} did not decompose"
        if len(lacking) < len(names)
        else f"none of the runs ({', '.join(names)}) decomposed"
    )
    raise CompareError(f"{who} the class “{wanted}”; the runs share: {', '.join(c.name for c in shared)}")


def held_out_photos(data: str | Path, split: str, shared: SharedClass, manifests: Sequence[Mapping], n: int) -> list[Path]:
    """The first ``n`` photos of the class in ``data/split`` that no compared run was trained on."""
    if n < 1:
        raise ValueError(f"at least 1 photo is needed (got {n})")
    root = split_dir(data, split)
    folder = next((f for f in dict.fromkeys(shared.folders) if (root / f).is_dir()), None)
    if folder is None:
        raise DataError(
            f"{root} has no folder of the class “{shared.name}” (looked for {', '.join(dict.fromkeys(shared.folders))})"
        )
    trained = {str(Path(p).resolve()) for m in manifests for f in shared.folders for p in m.get("images", {}).get(f, [])}
    photos = [p for p in split_images(data, split, folder) if str(p.resolve()) not in trained][:n]
    if not photos:
        raise DataError(f"{root / folder} has no photo that the runs were not trained on")
    return photos


# -- one run's view of the photos ----------------------------------------------------------------------
def contribution_shares(contributions: torch.Tensor) -> torch.Tensor:
    """(..., k) contributions -> each prototype's share |c_i| / sum_j |c_j| of the evidence."""
    magnitude = contributions.abs()
    return magnitude / magnitude.sum(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass
class RunSide:
    """One run on the compared photos, through its own backbone."""

    name: str
    backbone: str
    k: int
    strategy: str
    class_name: str
    images: list[np.ndarray]  # the photos as this backbone sees them (after its resize and crop)
    heatmaps: torch.Tensor  # (n, k, h, w) f(x) . p~_i on the backbone's grid
    presence: torch.Tensor  # (n, k, h, w) NMF part presence (1 = strongly present)
    coefficients: torch.Tensor  # (n, k, h, w) f(x) . pinv(P~): the prototypes read together (see MAPS)
    contributions: torch.Tensor  # (n, k) to the class's logit
    bias: float
    discovery: str = DEFAULT_DISCOVERY  # how the run found its parts
    presence_damping: float = 0.0  # how its part maps read a cell (``method.head.read_cells``)

    @property
    def title(self) -> str:
        found = "" if self.discovery == DEFAULT_DISCOVERY else f", {DISCOVERY_LABELS.get(self.discovery, self.discovery)}"
        return f"{self.name} ({short_backbone(self.backbone)}, k = {self.k}, {self.strategy}{found})"

    @property
    def mean_contribution(self) -> torch.Tensor:
        return self.contributions.mean(dim=0)

    @property
    def shares(self) -> torch.Tensor:
        """Each prototype's share of the evidence, from its mean contribution over the photos."""
        return contribution_shares(self.mean_contribution)

    @property
    def logit(self) -> float:
        """The class's mean logit over the photos (contributions + bias)."""
        return float(self.contributions.sum(dim=1).mean()) + self.bias

    def maps(self, kind: str) -> torch.Tensor:
        """The maps prototypes are matched on (see ``MAPS``)."""
        if kind not in MAPS:
            raise ValueError(f"maps={kind!r}: choose one of {', '.join(MAPS)}")
        return self.heatmaps if kind == "heatmaps" else self.coefficients

    def heatmap_image(self, photo: int, i: int) -> np.ndarray:
        image = self.images[photo]
        return heatmap_overlay(upsample(self.heatmaps[photo, i], image.shape[:2]), image)

    def part_map_image(self, photo: int) -> np.ndarray:
        image = self.images[photo]
        return part_map(upsample(self.presence[photo], image.shape[:2]), image)


def run_side(
    name: str, run: Run, backbone: Backbone, head: PrototypeHead, position: int, photos: Sequence[Path], cache_dir: CacheDir = None
) -> tuple[RunSide, list[str]]:
    """One run's heatmaps, part maps and contributions on ``photos`` (and the photos it could read)."""
    features = extract_features(backbone, list(photos), cache_dir=cache_dir)
    display = backbone.preprocessing.display_transform()
    images = [display(load_image(p)).permute(1, 2, 0).numpy() for p in features.paths]
    feats = features.feats
    label = int(head.classes[position])
    side = RunSide(
        name=name,
        backbone=run.manifest["backbone"],
        k=run.k,
        strategy=run.strategy,
        class_name=run.class_names[position],
        images=images,
        heatmaps=head.heatmaps(feats, position),
        presence=head.presence(feats, position),
        coefficients=torch.einsum("bhwd,dk->bkhw", feats, torch.linalg.pinv(head.refined_prototypes[position].double()).float()),
        contributions=head.contributions(feats.mean(dim=(1, 2)))[:, position],
        bias=float(head.bias[label]),
        discovery=run.discovery,
        presence_damping=head.presence_damping,
    )
    return side, features.paths


@dataclass
class Comparison:
    """Two or three runs on the same photos of one class, their prototypes matched."""

    class_name: str
    photos: list[str]
    sides: list[RunSide]
    pairs: list[PairMatching]  # every pair of runs (0-1, 0-2, 1-2)
    maps: str = "heatmaps"  # what the prototypes were matched on (MAPS)

    @property
    def agreement(self) -> float:
        """The mean matched heatmap correlation, over the pairs of runs (1 = the same parts)."""
        return float(np.mean([p.agreement for p in self.pairs]))

    @property
    def per_photo(self) -> torch.Tensor:
        """(n,) each photo's agreement, over the pairs of runs."""
        return torch.stack([p.per_photo for p in self.pairs]).mean(dim=0)

    def disagreeing(self, n: int = 3) -> list[int]:
        """The photos where the runs disagree most (lowest agreement first)."""
        return self.per_photo.argsort()[:n].tolist()

    def columns(self, side: int) -> list[int | None]:
        """Run ``side``'s prototypes in the order that lines them up with the first run's: column c holds
        the prototype matched to the first run's prototype c (None: no match), then its unmatched ones."""
        if side == 0:
            return list(range(self.sides[0].k))
        pair = next(p for p in self.pairs if p.a == 0 and p.b == side)
        aligned = [pair.partner(i) for i in range(self.sides[0].k)]
        return [m[0] if m else None for m in aligned] + pair.unmatched_b

    def match_rows(self) -> list[dict]:
        """The matched prototypes as table rows: "A P2 ↔ B P1, r = 0.83"; unmatched prototypes too."""
        rows = []
        for pair in self.pairs:
            a, b = self.sides[pair.a], self.sides[pair.b]
            for (i, j, r), margin in zip(pair.pairs, pair.margins):
                note = " (ambiguous)" if margin < AMBIGUOUS_MARGIN else ""
                rows.append(
                    {
                        "run": a.name,
                        "prototype": f"P{i + 1}",
                        "matched run": b.name,
                        "matched prototype": f"P{j + 1}",
                        "r": r,
                        "margin": margin,
                        "match": f"{a.name} P{i + 1} ↔ {b.name} P{j + 1}, r = {r:.2f}{note}",
                    }
                )
            for name, other, unmatched in ((a.name, b.name, pair.unmatched_a), (b.name, a.name, pair.unmatched_b)):
                for i in unmatched:
                    rows.append(
                        {
                            "run": name,
                            "prototype": f"P{i + 1}",
                            "matched run": other,
                            "matched prototype": None,
                            "r": None,
                            "margin": None,
                            "match": f"{name} P{i + 1}: no counterpart in {other}",
                        }
                    )
        return rows

    def summary(self) -> dict:
        """The numbers, JSON-able (no images)."""
        return {
            "class": self.class_name,
            "maps": self.maps,
            "photos": self.photos,
            "agreement": self.agreement,
            "per_photo": self.per_photo.tolist(),
            "disagreeing": self.disagreeing(len(self.photos)),
            "runs": [
                {
                    "name": s.name,
                    "backbone": s.backbone,
                    "k": s.k,
                    "strategy": s.strategy,
                    "mean_contribution": s.mean_contribution.tolist(),
                    "share": s.shares.tolist(),
                    "bias": s.bias,
                    "logit": s.logit,
                }
                for s in self.sides
            ],
            "pairs": [
                {
                    "a": self.sides[p.a].name,
                    "b": self.sides[p.b].name,
                    "agreement": p.agreement,
                    "matches": [[i + 1, j + 1, r] for i, j, r in p.pairs],
                    "margins": p.margins,
                    "unmatched_a": [i + 1 for i in p.unmatched_a],
                    "unmatched_b": [j + 1 for j in p.unmatched_b],
                    "correlation": p.correlation.tolist(),
                }
                for p in self.pairs
            ],
            "matches": [r["match"] for r in self.match_rows()],
        }


def run_label(run: Run, fallback: str) -> str:
    """A run's name in a comparison: its folder's name."""
    return run.path.name if run.path else fallback


def compare_runs(
    runs: Sequence[Run],
    backbones: Sequence[Backbone],
    data: str | Path,
    class_name: str,
    split: str = "val",
    photos: int = 8,
    names: Sequence[str] | None = None,
    heads: Sequence[PrototypeHead] | None = None,
    grid: int = COMMON_GRID,
    maps: str = "heatmaps",
    cache_dir: CacheDir = None,
) -> Comparison:
    """Compare 2 or 3 runs (each with the backbone it was made from) on the held-out photos of one class.

    ``class_name``: a class name or folder that every run decomposed (CompareError naming the shared
    classes otherwise). ``heads``: the runs' prototype heads when the caller has them already. ``maps``:
    what prototypes are matched on (``MAPS``).
    """
    if maps not in MAPS:
        raise ValueError(f"maps={maps!r}: choose one of {', '.join(MAPS)}")
    if not 2 <= len(runs) <= MAX_RUNS:
        raise CompareError(f"compare 2 or {MAX_RUNS} runs (got {len(runs)})")
    if len(backbones) != len(runs):
        raise ValueError("one backbone per run")
    names = list(names) if names is not None else [run_label(r, f"run {i + 1}") for i, r in enumerate(runs)]
    if len(set(names)) < len(names):  # the same run twice: tell them apart
        names = [f"{n} ({i + 1})" if names.count(n) > 1 else n for i, n in enumerate(names)]
    manifests = [r.manifest for r in runs]
    shared = find_shared_class(manifests, class_name, names)
    paths = held_out_photos(data, split, shared, manifests, photos)
    heads = list(heads) if heads is not None else [r.head(b) for r, b in zip(runs, backbones)]
    sides, seen = [], []
    for name, run, backbone, head, position in zip(names, runs, backbones, heads, shared.positions):
        side, read = run_side(name, run, backbone, head, position, paths, cache_dir)
        sides.append(side)
        seen.append(read)
    common = [p for p in seen[0] if all(p in s for s in seen[1:])]
    if not common:
        raise DataError(f"none of the photos of “{shared.name}” could be read by every run")
    for side, read in zip(sides, seen):  # keep the photos every backbone could read, in one order
        if read != common:
            keep = [read.index(p) for p in common]
            side.images = [side.images[i] for i in keep]
            side.heatmaps, side.presence = side.heatmaps[keep], side.presence[keep]
            side.coefficients = side.coefficients[keep]
            side.contributions = side.contributions[keep]
    pairs = [
        match_pair(sides[a].maps(maps), sides[b].maps(maps), a, b, grid)
        for a in range(len(sides))
        for b in range(a + 1, len(sides))
    ]
    return Comparison(shared.name, common, sides, pairs, maps)
