"""What the pages show and preselect, computed without Streamlit: defaults, run and probe tables, prototype
cards, evaluation figures. Intervene's own rows are in ``edit_views.py``, Compare's in ``compare_views.py``.

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
from protolib.evaluation.compare import contribution_shares
from protolib.evaluation.prototype_health import ClassHealth
from protolib.method.discovery import DEFAULT_DISCOVERY, DISCOVERY_LABELS
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
        classes, params = m.get("classes", []), m.get("params") or {}
        names = ", ".join(c["name"] for c in classes[:4]) + (f" +{len(classes) - 4}" if len(classes) > 4 else "")
        rows.append(
            {
                "run": run.name,
                "backbone": m.get("backbone", "?"),
                "k": params.get("k"),
                "strategy": params.get("strategy", ""),
                "discovery": DISCOVERY_LABELS.get(params.get("discovery", DEFAULT_DISCOVERY), str(params.get("discovery"))),
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
    params = manifest.get("params") or {}
    discovery = params.get("discovery", DEFAULT_DISCOVERY)
    found = "" if discovery == DEFAULT_DISCOVERY else f" · {DISCOVERY_LABELS.get(discovery, discovery)}"
    return (
        f"{short_backbone(manifest.get('backbone') or '?')} · k = {params.get('k')} · {params.get('strategy')}{found} · "
        f"{len(names)} classes: {shown}"
    )


def same_model_runs(runs: Sequence[SavedRun], fingerprint: str) -> list[SavedRun]:
    """The readable runs made from the model with ``fingerprint``, without edited heads (errors against k)."""
    return [
        r
        for r in runs
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
    health: str = ""  # "dead: ...", "duplicate of prototype j: ..." (prototype_health), "" when neither

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
            "dead or duplicate": self.health,
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
    health: ClassHealth | None = None,
) -> list[PrototypeCard]:
    """One card per prototype of one class, led by its mean contribution over the class's photos
    (``contributions`` (B, k) from ``PrototypeHead.contributions``: the same prototypes and features
    as the logit), its share, and the reading of its sign; alpha and the top classes follow; ``names`` are the
    prototypes' labels ("" when unnamed); ``health`` (on the same photos) marks dead and duplicate ones."""
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
                    contribution_meaning(contribution, class_name)
                    if contribution is not None
                    else "its contribution is unknown: the class's training images cannot be read"
                ),
                alpha=float(alpha[i]),
                top_classes=[(name, score) for _, name, score in top],
                label=names[i] if i < len(names) else "",
                health=health.note(i) if health is not None else "",
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
