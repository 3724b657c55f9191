"""Runs compared with each other: side by side on the same photos of one class (the paper's Figure 3),
and across k (which number of prototypes the data supports).

**Side by side.** Two or three runs (other backbones, other k, other refinement strategies, probes)
that decomposed the same class are shown the same held-out photos. Each run sees them through its own
backbone: its part maps, its prototype heatmaps ``f(x) . p~_i``, each prototype's contribution and share
of the logit. Prototypes are matched across runs by how alike their heatmaps are on those photos: every
heatmap is upsampled to one common grid (backbones differ in resolution), the Pearson correlation of two
prototypes is taken over all photos' positions, and the Hungarian assignment
(``scipy.optimize.linear_sum_assignment``) pairs them so that the summed correlation is largest. The
*agreement* is the mean matched correlation; a photo's agreement is the same mean on that photo alone,
so the lowest are the photos where the runs read the class most differently.

Classes are matched by their folder, else by their name (case aside), from the runs' manifests: never
by label index alone, so runs of a probe and runs of an ImageNet model of the same photos meet.

**Across k.** :func:`k_sweep_point` gathers one run's head and feature errors, signed fidelity and seed
stability; :func:`suggest_k` reads which k the data supports with a stated rule.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..backbones import Backbone
from ..data import DataError, load_image, split_dir, split_images
from ..data.features import extract_features
from ..explain import heatmap_overlay, part_map, upsample
from ..files import atomic_path
from ..method.head import PrototypeHead
from ..palette import prototype_colour
from ..runs import Run
from ..runs.names import short_backbone

#: the grid every heatmap is upsampled to before correlating (56 = lcm of 7 and 8, Lite0's and Lite1's grids)
COMMON_GRID = 56
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

    @property
    def title(self) -> str:
        return f"{self.name} ({short_backbone(self.backbone)}, k = {self.k}, {self.strategy})"

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
    name: str, run: Run, backbone: Backbone, head: PrototypeHead, position: int, photos: Sequence[Path], cache_dir=None
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
        coefficients=torch.einsum("bhwd,dk->bkhw", feats, torch.linalg.pinv(head.prototypes[position].double()).float()),
        contributions=head.contributions(feats.mean(dim=(1, 2)))[:, position],
        bias=float(head.bias[label]),
    )
    return side, features.paths


# -- matching -------------------------------------------------------------------------------------------
def _columns(maps: torch.Tensor, grid: int) -> torch.Tensor:
    """(n, k, h, w) -> (n * grid * grid, k): each prototype's heatmap values over all photos' positions."""
    common = upsample(maps.float(), grid)  # (n, k, G, G)
    return common.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def correlation_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of every column of ``a`` (N, k1) with every column of ``b`` (N, k2): (k1, k2).
    A constant column (a heatmap flat on every photo) correlates 0 with everything."""
    a = a.double() - a.double().mean(dim=0)
    b = b.double() - b.double().mean(dim=0)
    na, nb = a.norm(dim=0), b.norm(dim=0)
    r = (a.T @ b) / (na.unsqueeze(1) * nb.unsqueeze(0)).clamp_min(1e-30)
    r[na < 1e-12] = 0
    r[:, nb < 1e-12] = 0
    return r.clamp(-1, 1).float()


@dataclass
class PairMatching:
    """Two runs' prototypes matched one to one (Hungarian on heatmap correlation)."""

    a: int  # index of the first run among the compared runs
    b: int
    correlation: torch.Tensor  # (k_a, k_b) over all photos
    pairs: list[tuple[int, int, float]]  # (prototype of a, prototype of b, r), by prototype of a
    per_photo: torch.Tensor  # (n,) mean matched correlation on each photo alone
    unmatched_a: list[int] = field(default_factory=list)
    unmatched_b: list[int] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return float(np.mean([r for _, _, r in self.pairs])) if self.pairs else 0.0

    @property
    def margins(self) -> list[float]:
        """Per matched pair, how much its r beats the best alternative of either prototype (small: a near tie)."""
        r, out = self.correlation, []
        for i, j, value in self.pairs:
            others = torch.cat([torch.cat([r[i, :j], r[i, j + 1 :]]), torch.cat([r[:i, j], r[i + 1 :, j]])])
            out.append(value - float(others.max()) if len(others) else 1.0)
        return out

    def partner(self, i: int) -> tuple[int, float] | None:
        """Run b's prototype matched to run a's prototype ``i``, with its r."""
        return next(((j, r) for p, j, r in self.pairs if p == i), None)


def match_pair(a: torch.Tensor, b: torch.Tensor, ia: int = 0, ib: int = 1, grid: int = COMMON_GRID) -> PairMatching:
    """Match the prototypes of two runs from their heatmaps ``a`` (n, k_a, h, w) and ``b`` (n, k_b, h', w')
    on the same n photos."""
    if len(a) != len(b):
        raise ValueError(f"the runs saw {len(a)} and {len(b)} photos: they must see the same ones")
    ca, cb = _columns(a, grid), _columns(b, grid)
    correlation = correlation_matrix(ca, cb)
    rows, cols = linear_sum_assignment(correlation.numpy(), maximize=True)
    pairs = sorted((int(i), int(j), float(correlation[i, j])) for i, j in zip(rows, cols))
    n, cells = len(a), grid * grid
    per_photo = torch.zeros(n)
    for photo in range(n):
        sa, sb = ca[photo * cells : (photo + 1) * cells], cb[photo * cells : (photo + 1) * cells]
        on_photo = correlation_matrix(sa, sb)
        per_photo[photo] = float(np.mean([float(on_photo[i, j]) for i, j, _ in pairs])) if pairs else 0.0
    return PairMatching(
        ia,
        ib,
        correlation,
        pairs,
        per_photo,
        sorted(set(range(a.shape[1])) - {i for i, _, _ in pairs}),
        sorted(set(range(b.shape[1])) - {j for _, j, _ in pairs}),
    )


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
    cache_dir=None,
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


# -- the figure -----------------------------------------------------------------------------------------
def comparison_png(comparison: Comparison, photos: Sequence[int] | None = None, path: str | Path | None = None) -> bytes:
    """One PNG of the comparison: for each photo shown (default: the one the runs disagree on most), one
    row per run with its part map and its prototypes' heatmaps, lined up with the first run's matched
    prototypes, each titled with its mean contribution and share; the matches and the agreement below.
    Written to ``path`` too when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = comparison
    shown = list(photos) if photos is not None else c.disagreeing(1)
    columns = [c.columns(s) for s in range(len(c.sides))]
    width = 1 + max(len(col) for col in columns)
    rows = len(shown) * len(c.sides)
    lines = [f"agreement (mean matched correlation of {MAPS[c.maps].split(' (')[0]}): {c.agreement:.2f}"] + [
        f"{c.sides[p.a].name} ↔ {c.sides[p.b].name}: " + ", ".join(f"P{i + 1}↔P{j + 1} ({r:+.2f})" for i, j, r in p.pairs)
        for p in c.pairs
    ]
    text_height = 0.28 * len(lines) + 0.3
    fig = plt.figure(figsize=(2.1 * width, 2.35 * rows + text_height + 0.6))
    grid = fig.add_gridspec(rows + 1, width, height_ratios=[2.35] * rows + [text_height])
    for block, photo in enumerate(shown):
        for s, side in enumerate(c.sides):
            r = block * len(c.sides) + s
            ax = fig.add_subplot(grid[r, 0])
            ax.imshow(side.part_map_image(photo))
            ax.set_title(f"{side.name[:26]}\nk={side.k} · part map", fontsize=8)
            ax.set_ylabel(f"photo {photo + 1}" if s == 0 else "", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            for col, i in enumerate(columns[s]):
                if i is None:
                    continue
                ax = fig.add_subplot(grid[r, col + 1])
                ax.imshow(side.heatmap_image(photo, i))
                ax.axis("off")
                match = ""
                if s > 0 and col < c.sides[0].k:
                    partner = next(p for p in c.pairs if p.a == 0 and p.b == s).partner(col)
                    match = f" ↔P{col + 1} r={partner[1]:+.2f}" if partner else ""
                ax.set_title(
                    f"P{i + 1}: {float(side.mean_contribution[i]):+.2f} ({100 * float(side.shares[i]):.0f} %){match}",
                    fontsize=8,
                    color=np.array(prototype_colour(i)) / 255 * 0.8,
                )
    ax = fig.add_subplot(grid[rows, :])
    ax.axis("off")
    ax.text(0, 1, "\n".join(lines), va="top", ha="left", fontsize=9, family="DejaVu Sans")
    fig.suptitle(
        f"“{c.class_name}”: {len(c.sides)} runs on the same {len(c.photos)} held-out photos "
        f"(heatmaps f·p̃ with mean contribution and share of the logit)",
        fontsize=10,
    )
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    data = buffer.getvalue()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return data


# -- which k the data supports --------------------------------------------------------------------------
#: the rule :func:`suggest_k` applies, in words
K_RULE = (
    "the smallest k after which the head error improves by less than {improvement:.0%} at the next k, "
    "with signed heatmap fidelity of at least {fidelity:.2f} and no flipped prototype"
)


def k_sweep_point(
    run: Run, weight: torch.Tensor, evaluation: Mapping, stability: Mapping | None = None, health: Mapping | None = None
) -> dict:
    """One run's point of the k sweep: head and feature errors, the signed held-out fidelity of its own
    strategy (``evaluation``: ``evaluate_run``'s figures), the seed stability (``stability``: the
    report's ``seed_stability_section``; None when not measured) and how many prototypes are dead or
    duplicates (``health``: ``prototype_health.health_counts``; None when not measured)."""
    fidelity = evaluation.get("signed_fidelity", {}).get(run.strategy)
    return {
        "run": run_label(run, ""),
        "k": run.k,
        "strategy": run.strategy,
        "head error": float(run.head_error(weight.cpu()).mean()),
        "feature error": float(run.feature_error.mean()),
        "fidelity": fidelity["mean"] if fidelity else None,
        "worst fidelity": fidelity["min"] if fidelity else None,
        "flips": fidelity["flips"] if fidelity else None,
        "seed stability": stability["mean"] if stability else None,
        "dead": health["dead"] if health else None,
        "duplicates": health["duplicates"] if health else None,
    }


@dataclass(frozen=True)
class KChoice:
    """The k the data supports (None: no run passes the rule), the sentence that says so, and the rule."""

    k: int | None
    sentence: str
    rule: str
    per_k: list[dict]  # one point per k (the run that stands for it), sorted by k


def _fidelity(point: Mapping) -> float:
    """A point's fidelity; one without counts as the worst."""
    fidelity = point.get("fidelity")
    return -np.inf if fidelity is None else fidelity


def _per_k(points: Sequence[Mapping]) -> list[dict]:
    """One point per k: the run with the best fidelity at that k (errors do not depend on the strategy)."""
    best: dict[int, Mapping] = {}
    for p in points:
        current = best.get(p["k"])
        if current is None or _fidelity(p) > _fidelity(current):
            best[p["k"]] = p
    return [dict(best[k]) for k in sorted(best)]


def suggest_k(points: Sequence[Mapping], improvement: float = 0.05, min_fidelity: float = 0.95) -> KChoice:
    """Which k the runs support: ``K_RULE``. The head error of k is compared with that of the next larger
    k among the runs; the largest k measured never qualifies (nothing says that more would not help)."""
    rule = K_RULE.format(improvement=improvement, fidelity=min_fidelity)
    per_k = _per_k(points)
    if len(per_k) < 2:
        return KChoice(None, "Make runs of the same model and classes with at least two values of k to choose k.", rule, per_k)
    for here, after in pairwise(per_k):
        gain = (here["head error"] - after["head error"]) / max(here["head error"], 1e-12)
        faithful = here.get("fidelity") is not None and here["fidelity"] >= min_fidelity and not here.get("flips")
        if gain < improvement and faithful:
            return KChoice(
                here["k"],
                (
                    f"The data supports k = {here['k']}: going to k = {after['k']} lowers the head error by only "
                    f"{100 * gain:.1f} % ({here['head error']:.3f} → {after['head error']:.3f}), and at k = {here['k']} the "
                    f"heatmap fidelity is {here['fidelity']:.3f} with no flipped prototype."
                ),
                rule,
                per_k,
            )
    unmeasured = [p["k"] for p in per_k if p.get("fidelity") is None]
    if unmeasured:
        reason = f"the fidelity of k = {', '.join(map(str, unmeasured))} is not measured yet"
    else:
        reason = f"the head error still falls by {100 * improvement:.0f} % or more at every step, or fidelity is low"
    return KChoice(
        None, f"No k among {', '.join(str(p['k']) for p in per_k)} passes the rule: {reason}; try a larger k.", rule, per_k
    )
