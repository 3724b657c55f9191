"""What the pages show and preselect, computed without Streamlit: table rows, prototype cards,
intervention notes, evaluation figures, defaults.

Plain Python on tensors and dicts, so it is tested without a browser; the pages only lay it out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from protolib import config
from protolib.backbones import BackboneError
from protolib.backbones.probe_models import PROBE_MANIFEST, probe_name, read_probe_manifest
from protolib.data import Problem
from protolib.runs import SavedRun, list_runs, short_backbone

GALLERY_PAGE_SIZE = 24


# -- defaults ------------------------------------------------------------------------------------
def cli_data_arg(argv: Sequence[str]) -> str | None:
    """``--data DIR`` or ``--data=DIR`` from the script's arguments (``streamlit run app.py -- --data DIR``)."""
    for i, arg in enumerate(argv):
        if arg == "--data" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--data="):
            return arg.split("=", 1)[1]
    return None


def default_data_dir(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Path | None:
    """The first data folder that exists of ``--data``, ``$PROTOLIB_DATA`` and the sample photos."""
    environ = os.environ if environ is None else environ
    given = cli_data_arg(argv)
    candidates = [Path(given).expanduser() if given else None, config.data_dir_from_env(environ), config.SAMPLE_DATA]
    return next((p for p in candidates if p is not None and p.is_dir()), None)


def default_class(logits: torch.Tensor, decomposed: Sequence[int]) -> tuple[int, int]:
    """(predicted class, class to show first): the prediction when the run decomposed it, else the
    decomposed class with the highest logit."""
    predicted = int(logits.argmax())
    if predicted in decomposed:
        return predicted, predicted
    scores = logits[torch.as_tensor(list(decomposed), dtype=torch.long)]
    return predicted, int(decomposed[int(scores.argmax())])


# -- runs and probes -----------------------------------------------------------------------------
def run_rows(runs: Sequence[SavedRun]) -> list[dict]:
    """One row per saved run for the runs table (manifests only: no tensors are read)."""
    rows = []
    for run in runs:
        m = run.manifest
        if m is None:
            rows.append({"run": run.name, "backbone": "(damaged)", "k": None, "strategy": "", "classes": 0})
            continue
        classes = m.get("classes", [])
        names = ", ".join(c["name"] for c in classes[:4]) + (f" +{len(classes) - 4}" if len(classes) > 4 else "")
        rows.append(
            {
                "run": run.name,
                "backbone": m.get("backbone", "?"),
                "k": m.get("k"),
                "strategy": m.get("strategy", ""),
                "classes": len(classes),
                "class names": names,
                "images": sum(c.get("n_images", 0) for c in classes),
                "problems": len(m.get("problems", [])),
                "seconds": m.get("seconds"),
                "saved": (m.get("saved") or "").replace("T", " ")[:19],
                "intervention": m.get("intervention") or "",
            }
        )
    return rows


def run_caption(manifest: Mapping) -> str:
    """One line about a run for the sidebar: backbone, k, strategy and its classes."""
    names = [c["name"] for c in manifest.get("classes", [])]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"{short_backbone(manifest.get('backbone') or '?')} · k = {manifest.get('k')} · {manifest.get('strategy')} · "
        f"{len(names)} classes: {shown}"
    )


def same_model_runs(runs: Sequence[SavedRun], fingerprint: str) -> list[SavedRun]:
    """The readable runs made from the model with ``fingerprint``, without edited heads (errors against k)."""
    return [
        r for r in runs
        if r.manifest is not None and r.manifest.get("fingerprint") == fingerprint and not r.manifest.get("intervention")
    ]


def problem_rows(problems: Sequence) -> list[dict]:
    """Problems (``Problem`` objects, ``[path, reason]`` pairs as manifests keep them, or their text
    ``path: reason``) as table rows."""
    rows = []
    for p in problems:
        if isinstance(p, Problem):
            path, reason = p.path, p.reason
        elif isinstance(p, str):
            path, _, reason = p.partition(": ")
        else:
            path, reason = p[0], p[1]
        rows.append({"file or folder": str(path), "problem": str(reason)})
    return rows


def saved_probes(root: str | Path) -> list[tuple[Path, dict | None]]:
    """The probe folders directly under ``root`` (the runs folder), newest first, with their manifests
    (None when damaged)."""
    probes = []
    for path in list_runs(root, PROBE_MANIFEST):
        try:
            probes.append((path, read_probe_manifest(path)))
        except BackboneError:
            probes.append((path, None))
    return probes


def probe_description(path: Path, manifest: Mapping) -> str:
    return (
        f"Probe “{path.name}”: {manifest.get('backbone')} + linear head, {len(manifest.get('classes', []))} classes, "
        f"val accuracy {100 * manifest.get('val_accuracy', float('nan')):.0f} %"
    )


def probe_choices(root: str | Path) -> dict[str, str]:
    """Backbone name (``probe:<folder>``) -> description, for the usable probes under ``root``."""
    return {probe_name(path): probe_description(path, m) for path, m in saved_probes(root) if m is not None}


def probe_rows(root: str | Path) -> list[dict]:
    """One row per probe folder under ``root``, for a table."""
    rows = []
    for path, m in saved_probes(root):
        m = m or {}
        rows.append(
            {
                "probe": path.name,
                "backbone": m.get("backbone", "(damaged)"),
                "classes": len(m.get("classes", [])),
                "training images": m.get("n_train"),
                "val accuracy": m.get("val_accuracy"),
                "data": m.get("data", ""),
            }
        )
    return rows


# -- prototypes ----------------------------------------------------------------------------------
def direction_top_classes(
    weight: torch.Tensor, prototype: torch.Tensor, labels: Sequence[str], n: int = 3
) -> list[tuple[int, str, float]]:
    """The classes whose head rows score the prototype's direction highest (DFF-style labels):
    ``weight @ p~ / ||p~||``, as (label, name, score)."""
    direction = prototype.float() / prototype.float().norm().clamp_min(1e-12)
    scores = weight.float().cpu() @ direction.cpu()
    values, indices = scores.topk(min(n, len(scores)))
    return [(int(i), labels[int(i)], float(v)) for v, i in zip(values, indices)]


def contribution_meaning(contribution: float, class_name: str) -> str:
    """How to read a prototype from the sign of its mean contribution to the class's logit (never
    from alpha alone: refinement may turn a prototype against the sign of its NMF part's alpha)."""
    if contribution > 0:
        return f"raises the logit of “{class_name}” on its photos: where this part shows, “{class_name}” is more likely"
    if contribution < 0:
        return (
            f"lowers the logit of “{class_name}” on its photos: where this part shows, “{class_name}” is less likely "
            "(often background or context)"
        )
    return f"does not move the logit of “{class_name}”"


def contribution_shares(contributions: torch.Tensor) -> torch.Tensor:
    """(..., k) contributions -> each prototype's share |c_i| / sum_j |c_j| of the evidence."""
    magnitude = contributions.abs()
    return magnitude / magnitude.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def signed(value: float, digits: int = 2) -> str:
    """A number with its sign that never reads as a signed zero: ``+2.31``, ``-4.2e-05``, ``0``."""
    if value == 0:
        return "0"
    text = f"{value:+.{digits}f}"
    return text if float(text) != 0 else f"{value:+.2g}"


@dataclass(frozen=True)
class PrototypeCard:
    """What the Prototypes page says about one prototype of one class."""

    prototype: int  # 1-based
    contribution: float | None  # mean over the class's photos; None when they cannot be read
    share: float | None  # |mean contribution| as a share of all the class's prototypes'
    meaning: str  # from the sign of ``contribution``
    alpha: float  # weight of its NMF part in the head row, before refinement
    top_classes: list[tuple[str, float]]
    label: str = ""  # the name a person gave it ("" when unnamed)

    @property
    def title(self) -> str:
        return f"Prototype {self.prototype}" + (f" · {self.label}" if self.label else "")

    def row(self) -> dict:
        return {
            "prototype": self.prototype,
            "label": self.label,
            "mean contribution": self.contribution,
            "share": self.share,
            "alpha (NMF part)": self.alpha,
            "reading": self.meaning,
            "top classes of its direction": ", ".join(name for name, _ in self.top_classes),
        }


def prototype_cards(
    alpha: torch.Tensor,
    prototypes: torch.Tensor,
    weight: torch.Tensor,
    labels: Sequence[str],
    class_name: str,
    contributions: torch.Tensor | None = None,
    n_top: int = 3,
    names: Sequence[str] = (),
) -> list[PrototypeCard]:
    """One card per prototype of one class, led by its mean contribution over the class's photos
    (``contributions`` (B, k) from ``PrototypeHead.contributions``: the same prototypes and features
    as the logit), its share, and the reading of its sign; alpha and the top classes follow; ``names`` are the
    prototypes' labels ("" when unnamed)."""
    mean = contributions.float().mean(dim=0) if contributions is not None and len(contributions) else None
    shares = contribution_shares(mean) if mean is not None else None
    cards = []
    for i in range(len(alpha)):
        top = direction_top_classes(weight, prototypes[i], labels, n_top)
        contribution = float(mean[i]) if mean is not None else None
        cards.append(
            PrototypeCard(
                prototype=i + 1,
                contribution=contribution,
                share=float(shares[i]) if shares is not None else None,
                meaning=(
                    contribution_meaning(contribution, class_name) if contribution is not None
                    else "its contribution is unknown: the class's training images cannot be read"
                ),
                alpha=float(alpha[i]),
                top_classes=[(name, score) for _, name, score in top],
                label=names[i] if i < len(names) else "",
            )
        )
    return cards


def rank_by_contribution(contributions: torch.Tensor, i: int, n: int) -> list[int]:
    """Indices of the images (B, k) where prototype ``i`` moves the logit most, strongest first.

    Ranked by contribution, not raw activation, as PIP-Net does: it is what moved the logit. A
    prototype whose contributions are negative on average (negative evidence) is ranked by how
    negative they are, so that both kinds show where the prototype matters most.
    """
    column = contributions[:, i]
    sign = -1.0 if float(column.mean()) < 0 else 1.0
    return (sign * column).argsort(descending=True)[:n].tolist()


def page_bounds(n_items: int, page: int, per_page: int = GALLERY_PAGE_SIZE) -> tuple[int, int, int]:
    """(start, stop, n_pages) of a 1-based ``page`` (clamped to the pages that exist)."""
    n_pages = max(1, -(-n_items // per_page))
    page = min(max(1, page), n_pages)
    start = (page - 1) * per_page
    return start, min(start + per_page, n_items), n_pages


# -- intervention --------------------------------------------------------------------------------
def scale_matrix(n_classes: int, k: int, settings: Mapping[tuple[int, int], float]) -> torch.Tensor:
    """The (C, k) intervention: 1 everywhere except the (class position, prototype) entries set."""
    scale = torch.ones(n_classes, k)
    for (c, i), value in settings.items():
        scale[c, i] = float(value)
    return scale


def describe_scale(scale: torch.Tensor, class_names: Sequence[str]) -> str:
    """A readable note of what an intervention changes, e.g. ``tench: P1 off, P2 ×0.5``."""
    parts = []
    for c, name in enumerate(class_names):
        changed = [
            f"P{i + 1} off" if float(v) == 0 else f"P{i + 1} ×{float(v):g}"
            for i, v in enumerate(scale[c])
            if float(v) != 1
        ]
        if changed:
            parts.append(f"{name}: " + ", ".join(changed))
    return "; ".join(parts) or "no change"


def top_logit_rows(
    labels: Sequence[str], original: torch.Tensor, edited: torch.Tensor, n: int = 5, decomposed=(), include=()
) -> list[dict]:
    """The top-n classes after an intervention, with their original logits and rank; the classes in
    ``include`` (e.g. the edited ones) are added at their rank when they fell out of the top n."""
    probs = edited.softmax(dim=0)
    original_rank = {int(c): r + 1 for r, c in enumerate(original.argsort(descending=True).tolist())}
    edited_rank = {int(c): r + 1 for r, c in enumerate(edited.argsort(descending=True).tolist())}
    decomposed = set(int(c) for c in decomposed)
    shown = edited.argsort(descending=True)[:n].tolist()
    shown += sorted((int(c) for c in include if int(c) not in shown), key=lambda c: edited_rank[c])
    rows = []
    for c in shown:
        rows.append(
            {
                "rank": edited_rank[c],
                "class": labels[c],
                "logit": float(edited[c]),
                "original logit": float(original[c]),
                "change": float(edited[c] - original[c]),
                "probability": float(probs[c]),
                "original rank": original_rank.get(c),
                "decomposed": c in decomposed,
            }
        )
    return rows


def gains_and_losses(per_class_change: Mapping, labels: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """Classes whose val accuracy rose, and those whose fell (largest change first)."""
    rows = [{"class": labels[int(c)], "accuracy change": float(d)} for c, d in per_class_change.items()]
    gained = sorted((r for r in rows if r["accuracy change"] > 0), key=lambda r: -r["accuracy change"])
    lost = sorted((r for r in rows if r["accuracy change"] < 0), key=lambda r: r["accuracy change"])
    return gained, lost


# -- evaluation ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figure:
    key: str
    name: str
    meaning: str
    percent: bool = True


FIGURES = [
    Figure("top1_original", "Top-1, original model", "accuracy of the model as it is"),
    Figure("top1_prototype", "Top-1, prototype network", "the same by construction (the head is rewritten exactly)"),
    Figure("max_abs_logit_diff", "Max |logit difference|", "exactness: largest logit change over all images", False),
    Figure("feature_reconstruction_error", "Feature reconstruction error", "‖A − E P‖ / ‖A‖ of the NMF", False),
    Figure("head_reconstruction_error", "Head reconstruction error", "‖v − Σ alpha_i p_i‖ / ‖v‖", False),
]
#: the label spaces of ``metrics.table3``
TABLE3_SPACES = {"among_run_classes": "among the run's classes", "all_classes": "among all the model's classes"}
TABLE3_ROWS = {
    "prototypes_only": ("NMF prototypes only", "head rows replaced by Σ alpha_i p_i (Table 3)"),
    "residual_only": ("residual only", "head rows replaced by the residual R (Table 3)"),
    "both": ("both (prototype network)", "the whole head rows"),
}


def evaluation_rows(metrics: Mapping) -> list[dict]:
    """The figures of ``evaluate_run`` as (figure, value, meaning) rows, values formatted."""
    rows = []
    for f in FIGURES:
        if f.key in metrics:
            value = metrics[f.key]
            text = f"{100 * value:.1f} %" if f.percent else f"{value:.3g}"
            rows.append({"figure": f.name, "value": text, "meaning": f.meaning})
    for space, where in TABLE3_SPACES.items():
        for key, value in metrics.get("table3", {}).get(space, {}).items():
            if key != "both":
                name, meaning = TABLE3_ROWS[key]
                rows.append({"figure": f"Top-1, {name}, {where}", "value": f"{100 * value:.1f} %", "meaning": meaning})
    for row in fidelity_rows(metrics):
        mark = " (this run)" if row["this run"] else ""
        rows.append(
            {
                "figure": f"Heatmap fidelity, {row['strategy']}{mark}",
                "value": f"{row['mean']:.3f} (worst {row['worst prototype']:+.3f}, {row['flips']} flipped)",
                "meaning": "signed Pearson of NMF and refined heatmaps on held-out images (below 0: the prototype flipped)",
            }
        )
    rows.append({"figure": "Images", "value": str(metrics.get("n_images", "")), "meaning": "evaluated images"})
    return rows


def fidelity_rows(metrics: Mapping) -> list[dict]:
    """Signed heatmap fidelity per refinement strategy: mean, worst prototype, and prototypes that flipped."""
    return [
        {
            "strategy": name,
            "mean": f["mean"],
            "worst prototype": f["min"],
            "flips": f["flips"],
            "this run": name == metrics.get("strategy"),
        }
        for name, f in metrics.get("signed_fidelity", {}).items()
    ]


def fidelity_per_class_rows(metrics: Mapping, labels: Sequence[str]) -> list[dict]:
    """Per decomposed class, the mean signed fidelity of each strategy."""
    per = {s: f["per_class"] for s, f in metrics.get("signed_fidelity", {}).items()}
    classes = sorted({int(c) for values in per.values() for c in values})
    return [{"class": labels[c], **{s: per[s].get(str(c)) for s in per}} for c in classes]


def table3_rows(metrics: Mapping) -> list[dict]:
    """The paper's Table-3 analogue: top-1 with NMF prototypes only, the residual only, and both, in
    each label space."""
    table = metrics["table3"]
    return [
        {"head rows": name, **{where: table[space][key] for space, where in TABLE3_SPACES.items() if space in table}}
        for key, (name, _) in TABLE3_ROWS.items()
    ]


def k_sweep_rows(runs: Sequence, weight: torch.Tensor) -> list[dict]:
    """Reconstruction errors against k for runs of one model (Figure 5's analogue); needs no images."""
    rows = []
    for run in runs:
        rows.append(
            {
                "run": run.path.name if run.path else "",
                "k": run.k,
                "strategy": run.strategy,
                "classes": len(run.classes),
                "feature reconstruction error": float(run.feature_error.mean()),
                "head reconstruction error": float(run.head_error(weight.cpu()).mean()),
            }
        )
    return sorted(rows, key=lambda r: (r["k"], r["run"]))


def visible_run_rows(runs: Mapping[str, SavedRun], published: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """``run_rows`` for the runs a session sees, by the name each is shown under (``runs``' keys): the
    backbone by its short name (a probe's folder name, never its path) and who sees the run."""
    rows = []
    for key, row in zip(runs, run_rows(list(runs.values()))):
        if row["backbone"] != "(damaged)":
            row["backbone"] = short_backbone(str(row["backbone"]))
        rows.append({"run": key, "visible to": "everyone" if key in published else "you", **row} | {"run": key})
    return rows


# -- comparing runs ------------------------------------------------------------------------------
def class_folder_set(manifest: Mapping) -> frozenset[str]:
    """The class folders a run decomposed (what "the same classes" means for two runs)."""
    return frozenset(c["folder"] for c in manifest.get("classes", []))


def same_class_runs(runs: Sequence[SavedRun], manifest: Mapping) -> list[SavedRun]:
    """The runs (of ``runs``) that decomposed exactly the classes of ``manifest``."""
    wanted = class_folder_set(manifest)
    return [r for r in runs if r.manifest is not None and class_folder_set(r.manifest) == wanted]


def comparable_runs(runs: Mapping[str, SavedRun]) -> list[str]:
    """The names of the runs that can be compared (readable manifests), newest first as listed."""
    return [name for name, r in runs.items() if r.manifest is not None and r.manifest.get("classes")]


def shares_a_class(a: Mapping, b: Mapping) -> bool:
    """Whether two runs' manifests decomposed a common class (by folder, else by name)."""
    names = {str(c["name"]).casefold() for c in a.get("classes", [])}
    return bool(class_folder_set(a) & class_folder_set(b)) or any(
        str(c["name"]).casefold() in names for c in b.get("classes", []))


def compare_defaults(runs: Mapping[str, SavedRun], current: str | None) -> list[str]:
    """The runs Compare opens with: the session's run and the newest other run sharing a class with it,
    preferring one of another backbone (the paper's Figure 3 compares backbones)."""
    names = comparable_runs(runs)
    first = current if current in names else (names[0] if names else None)
    if first is None:
        return []
    m = runs[first].manifest
    others = [n for n in names if n != first and shares_a_class(m, runs[n].manifest)]
    other_model = [n for n in others if runs[n].manifest.get("fingerprint") != m.get("fingerprint")]
    pick = (other_model or others)[:1]
    return [first, *pick]


def agreement_reading(agreement: float) -> str:
    """How to read the agreement number (mean matched correlation)."""
    if agreement >= 0.9:
        return "the runs point at the same parts"
    if agreement >= 0.7:
        return "the runs mostly point at the same parts"
    if agreement >= 0.4:
        return "the runs share some parts and read others differently"
    return "the runs reason from different parts"


def match_reading(r: float) -> str:
    """How to read one matched pair's correlation."""
    if r >= 0.9:
        return "the same part"
    if r >= 0.7:
        return "a similar part"
    if r >= 0.4:
        return "partly the same part"
    return "different parts"


def match_table(rows: Sequence[Mapping], ambiguous: float) -> list[dict]:
    """``Comparison.match_rows`` as table rows, each with a reading of its r and its margin."""
    table = []
    for r in rows:
        if r["r"] is None:
            reading = "no counterpart (the other run has fewer prototypes)"
        elif r["margin"] < 0:
            reading = (f"a compromise: another candidate correlates {-r['margin']:.2f} more, but the one-to-one "
                       "assignment gave it to another prototype")
        elif r["margin"] < ambiguous:
            reading = f"ambiguous: the next candidate is only {r['margin']:.2f} lower"
        else:
            reading = match_reading(r["r"])
        table.append({"match": r["match"], "r": r["r"], "reading": reading})
    return table


def photo_label(index: int, path: str, agreement: float) -> str:
    """A held-out photo in the picker: its number, file name and agreement."""
    return f"photo {index + 1} · {Path(path).name} · agreement {agreement:.2f}"


def contribution_table(sides: Sequence) -> list[dict]:
    """Per run and prototype, its mean contribution over the photos and its share of the evidence."""
    return [
        {"run": s.name, "prototype": f"P{i + 1}", "mean contribution": float(s.mean_contribution[i]),
         "share": float(s.shares[i])}
        for s in sides for i in range(s.k)
    ]


def k_point_rows(points: Sequence[Mapping]) -> list[dict]:
    """The k-sweep points as table rows, sorted by k."""
    return sorted((dict(p) for p in points), key=lambda p: (p["k"], p["run"]))


# -- editing across classes (Intervene) -------------------------------------------------------------
#: the columns of the prototype table a person edits: the selection and the name
SELECT, LABEL = "select", "label"


def swatch(colour: str) -> str:
    """A colour as a small SVG image (a data URL), for an image column of a table."""
    svg = (f"<svg xmlns='http://www.w3.org/2000/svg' width='18' height='18'><rect width='18' height='18' rx='4' "
           f"fill='{colour}' stroke='rgba(0,0,0,.2)'/></svg>")
    return "data:image/svg+xml;utf8," + svg.replace("#", "%23").replace("<", "%3C").replace(">", "%3E").replace(" ", "%20")


def scale_text(value: float) -> str:
    """An intervention's value as the table shows it: ``on``, ``off`` or ``×0.5``."""
    return "on" if value == 1 else "off" if value == 0 else f"×{value:g}"


def prototype_table(
    class_names: Sequence[str],
    k: int,
    labels: Sequence[Sequence[str]],
    scale: torch.Tensor,
    selected: set[tuple[int, int]] | frozenset = frozenset(),
    pending: Mapping[tuple[int, int], str] | None = None,
    shares: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
    colours: Sequence[str] = (),
) -> list[dict]:
    """One row per prototype of the run, class by class (row ``c * k + i`` is prototype i of class c): whether
    it is selected, its class, name (P1…), colour, label (an unsaved edit in ``pending`` shown), its share of the
    class's logit (``shares`` (C, k), on the class's training photos), the share of its heatmap on the background
    (``background`` (C, k), where the data has object masks) and its scale now."""
    pending = pending or {}
    rows = []
    for c, name in enumerate(class_names):
        for i in range(k):
            row = {
                SELECT: (c, i) in selected,
                "class": name,
                "prototype": f"P{i + 1}",
                "colour": swatch(colours[i % len(colours)]) if colours else "",
                LABEL: pending.get((c, i), labels[c][i]),
                "share of the logit": None if shares is None else float(shares[c, i]),
                "scale": scale_text(float(scale[c, i])),
            }
            if background is not None:
                row["on the background"] = float(background[c, i])
            rows.append(row)
    return rows


def merge_table_edits(
    edited_rows: Mapping, k: int, n_rows: int, selected: set[tuple[int, int]], pending: Mapping[tuple[int, int], str]
) -> tuple[set[tuple[int, int]], dict[tuple[int, int], str]]:
    """The selection and the unsaved labels after a person's edits of the prototype table (``st.data_editor``'s
    ``edited_rows``: row -> {column: value}); rows outside the table and other columns are ignored."""
    selected, pending = set(selected), dict(pending)
    for row, changes in edited_rows.items():
        try:
            row = int(row)
        except (TypeError, ValueError):
            continue
        if not 0 <= row < n_rows or not isinstance(changes, Mapping):
            continue
        where = (row // k, row % k)
        if SELECT in changes:
            (selected.add if changes[SELECT] else selected.discard)(where)
        if LABEL in changes:
            pending[where] = "" if changes[LABEL] is None else str(changes[LABEL])
    return selected, pending


def labels_after(
    labels: Sequence[Sequence[str]], decomposed: Sequence[int], pending: Mapping[tuple[int, int], str]
) -> dict[int, dict[int, str]]:
    """The run's labels (a (C, k) grid) with the unsaved edits applied, keyed as ``Run.with_labels`` takes them
    (class label in the model's label space -> prototype position -> name); emptied names are dropped."""
    merged = {}
    for c, label in enumerate(decomposed):
        names = {i: pending.get((c, i), text).strip() for i, text in enumerate(labels[c])}
        names = {i: text for i, text in names.items() if text}
        if names:
            merged[int(label)] = names
    return merged


def label_changes(labels: Sequence[Sequence[str]], pending: Mapping[tuple[int, int], str]) -> dict[tuple[int, int], str]:
    """The unsaved label edits that differ from the saved labels."""
    return {(c, i): text.strip() for (c, i), text in pending.items()
            if c < len(labels) and i < len(labels[c]) and text.strip() != labels[c][i]}


def prototype_name(class_name: str, i: int, label: str = "") -> str:
    """How a page names one prototype: ``tench · P2 “fins”`` (its label when it has one)."""
    return f"{class_name} · P{i + 1}" + (f" “{label}”" if label else "")


def scaled_settings(
    settings: Mapping[tuple[int, int], float], targets, value: float
) -> dict[tuple[int, int], float]:
    """An intervention (``(class position, prototype) -> scale``, 1 left out) with ``targets`` set to ``value``."""
    changed = dict(settings)
    for where in targets:
        if float(value) == 1:
            changed.pop(tuple(where), None)
        else:
            changed[tuple(where)] = float(value)
    return changed


def settings_of(scale: torch.Tensor) -> dict[tuple[int, int], float]:
    """A (C, k) intervention as ``(class position, prototype) -> scale`` for the entries that are not 1."""
    return {(int(c), int(i)): float(scale[c, i]) for c, i in (scale != 1).nonzero().tolist()}


def class_accuracy_rows(
    truth: torch.Tensor, before: torch.Tensor, after: torch.Tensor, names: Sequence[str]
) -> list[dict]:
    """Per class of the held-out photos (``truth`` indexes ``names``): photos, top-1 before and after an edit,
    and the change; the classes that changed most come first."""
    rows = []
    for label in sorted(set(truth.tolist())):
        mask = truth == label
        was, now = float((before[mask] == label).float().mean()), float((after[mask] == label).float().mean())
        rows.append({"class": names[int(label)], "photos": int(mask.sum()), "before": was, "after": now,
                     "change": now - was})
    return sorted(rows, key=lambda r: (-abs(r["change"]), r["class"]))


def group_rows(before: Mapping, after: Mapping) -> list[dict]:
    """``group_accuracy``'s per-group figures before and after an edit as rows, the worst group after first."""
    groups = sorted(set(before["per_group"]) | set(after["per_group"]), key=str)
    rows = [{"group": str(g), "before": before["per_group"].get(g), "after": after["per_group"].get(g)} for g in groups]
    for row in rows:
        row["change"] = None if row["before"] is None or row["after"] is None else row["after"] - row["before"]
    return sorted(rows, key=lambda r: (r["after"] if r["after"] is not None else 2.0, r["group"]))


def groups_of(paths: Sequence[str], data: str | Path, groups: Mapping[str, Mapping[str, str]]) -> list[str | None]:
    """The group (``groups.csv``'s ``group`` column, keyed by file relative to ``data``) of each photo, None for
    a photo the table does not list."""
    root = Path(data).resolve()
    found = []
    for path in paths:
        try:
            relative = Path(path).resolve().relative_to(root).as_posix()
        except ValueError:
            found.append(None)
            continue
        row = groups.get(relative)
        found.append(row.get("group") if row else None)
    return found
