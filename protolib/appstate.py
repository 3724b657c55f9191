"""What the app's pages compute, without Streamlit: where data and runs live, run listings, the
tables and rankings the pages draw, uploads, and intervention scales.

Everything here is plain Python on tensors and dicts, so it is tested without a browser; the pages
only lay it out.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from .backbones.probe_models import PREFIX as PROBE_PREFIX
from .backbones.probe_models import PROBE_MANIFEST, probe_name
from .data import IMAGE_SUFFIXES, BadImage, Problem, load_image
from .runs import MANIFEST, list_runs

REPO = Path(__file__).resolve().parents[1]
#: The project's sample photos: ``<repo>/../shared/data/imagenette``.
SAMPLE_DATA = REPO.parent / "shared" / "data" / "imagenette"
GALLERY_PAGE_SIZE = 24


# -- where things are ----------------------------------------------------------------------------
def cli_data_arg(argv: Sequence[str]) -> str | None:
    """``--data DIR`` or ``--data=DIR`` from the script's arguments (``streamlit run app.py -- --data DIR``)."""
    for i, arg in enumerate(argv):
        if arg == "--data" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--data="):
            return arg.split("=", 1)[1]
    return None


def data_candidates(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where the default data folder may be, in order: ``--data``, ``$PROTOLIB_DATA``, the sample."""
    environ = os.environ if environ is None else environ
    found = [cli_data_arg(argv), environ.get("PROTOLIB_DATA")]
    return [Path(p).expanduser() for p in found if p] + [SAMPLE_DATA]


def default_data_dir(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Path | None:
    """The first candidate data folder that exists, or None."""
    return next((p for p in data_candidates(argv, environ) if p.is_dir()), None)


def runs_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$PROTOLIB_RUNS``, else ``<repo>/runs``."""
    environ = os.environ if environ is None else environ
    return Path(environ["PROTOLIB_RUNS"]).expanduser() if environ.get("PROTOLIB_RUNS") else REPO / "runs"


# -- run names and listings ----------------------------------------------------------------------
_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


def auto_run_name(backbone: str, k: int, strategy: str, n_classes: int) -> str:
    """A readable default name, e.g. ``efficientnet_lite0-10cls-k3-optimized``."""
    return clean_run_name(f"{short_backbone(backbone)}-{n_classes}cls-k{k}-{strategy}")


def clean_run_name(name: str) -> str:
    """A run name safe as one folder name (letters, digits, ``.-_``); raises ValueError if nothing is left."""
    cleaned = _NAME_OK.sub("-", name.strip()).strip("-.")
    if not cleaned:
        raise ValueError(f"{name!r} cannot be a run name: use letters, digits, '.', '-' or '_'")
    return cleaned[:100]


def unique_run_path(root: str | Path, name: str) -> Path:
    """``root/name``, or ``root/name-2``, ``-3``... when taken: a new run never overwrites another."""
    root, name = Path(root), clean_run_name(name)
    path, n = root / name, 2
    while path.exists():
        path, n = root / f"{name}-{n}", n + 1
    return path


def read_manifest(path: str | Path, manifest: str = MANIFEST) -> dict | None:
    """A run (or probe) folder's manifest, or None when it is unreadable (a damaged run is listed as such)."""
    try:
        return json.loads((Path(path) / manifest).read_text())
    except (OSError, ValueError):
        return None


def run_rows(paths: Sequence[Path]) -> list[dict]:
    """One row per run folder for the runs table (manifests only: no tensors are read)."""
    rows = []
    for path in paths:
        m = read_manifest(path)
        if m is None:
            rows.append({"run": path.name, "backbone": "(damaged)", "k": None, "strategy": "", "classes": 0})
            continue
        classes = m.get("classes", [])
        names = ", ".join(c["name"] for c in classes[:4]) + (f" +{len(classes) - 4}" if len(classes) > 4 else "")
        rows.append(
            {
                "run": path.name,
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


def problem_rows(problems: Sequence) -> list[dict]:
    """Problems (``Problem`` objects or ``[path, reason]`` pairs) as table rows."""
    rows = []
    for p in problems:
        path, reason = (p.path, p.reason) if isinstance(p, Problem) else (p[0], p[1])
        rows.append({"file or folder": str(path), "problem": str(reason)})
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


def alpha_meaning(alpha: float, class_name: str) -> str:
    """How to read the sign of alpha."""
    if alpha > 0:
        return f"more like this part → more likely “{class_name}”"
    if alpha < 0:
        return f"less like this part → more likely “{class_name}” (often background or context)"
    return "no weight in the head"


def contribution_shares(contributions: torch.Tensor) -> torch.Tensor:
    """(..., k) contributions -> each prototype's share |c_i| / sum_j |c_j| of the evidence."""
    magnitude = contributions.abs()
    return magnitude / magnitude.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def prototype_rows(
    alpha: torch.Tensor,
    prototypes: torch.Tensor,
    weight: torch.Tensor,
    labels: Sequence[str],
    class_name: str,
    contributions: torch.Tensor | None = None,
    n_top: int = 3,
) -> list[dict]:
    """One row per prototype of one class: alpha and its meaning, the mean contribution to the
    class's logit over its images (B, k) and its share, and the classes its direction scores highest."""
    k = len(alpha)
    mean = contributions.float().mean(dim=0) if contributions is not None and len(contributions) else None
    shares = contribution_shares(mean) if mean is not None else None
    rows = []
    for i in range(k):
        top = direction_top_classes(weight, prototypes[i], labels, n_top)
        rows.append(
            {
                "prototype": i + 1,
                "alpha": float(alpha[i]),
                "meaning": alpha_meaning(float(alpha[i]), class_name),
                "mean contribution": float(mean[i]) if mean is not None else float("nan"),
                "share": float(shares[i]) if shares is not None else float("nan"),
                "top classes": [(name, score) for _, name, score in top],
            }
        )
    return rows


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
        rank = edited_rank[c]
        rows.append(
            {
                "rank": rank,
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


# -- uploads -------------------------------------------------------------------------------------
def read_upload(name: str, data: bytes) -> Image.Image:
    """An uploaded file as an RGB image; anything else raises BadImage with a message for people."""
    try:
        return load_image(io.BytesIO(data))
    except BadImage as exc:
        cause = exc.__cause__
        if isinstance(cause, UnidentifiedImageError):
            why = "its content is not a recognised image format"
        elif cause is not None:
            why = str(cause).split(" <_io.")[0].split("\n")[0] or type(cause).__name__
        else:  # refused by load_image itself (e.g. too many pixels): its reason follows the "path: "
            why = str(exc).split(": ", 1)[-1]
        raise BadImage(
            f"“{name}” is not an image that can be read ({why}). "
            f"Upload a photo ({', '.join(sorted(s.lstrip('.').upper() for s in IMAGE_SUFFIXES))})."
        ) from exc


def save_uploads(root: str | Path, split: str, folder: str, files: Sequence[tuple[str, bytes]]):
    """Store uploaded images as ``root/split/folder/<name>`` (a data folder the pipeline reads);
    files that are not images are reported and not stored. Returns (saved paths, problems)."""
    target = Path(root) / split / folder
    target.mkdir(parents=True, exist_ok=True)
    saved, problems = [], []
    for name, data in files:
        try:
            image = read_upload(name, data)
        except BadImage as exc:
            problems.append(Problem(name, str(exc)))
            continue
        stem = clean_run_name(Path(name).stem) if Path(name).stem.strip("-._ ") else "image"
        path = target / f"{stem}.png"
        n = 2
        while path.exists():
            path, n = target / f"{stem}-{n}.png", n + 1
        image.save(path)
        saved.append(path)
    return saved, problems


def extract_zip_upload(root: str | Path, name: str, data: bytes):
    """An uploaded .zip of an image folder, extracted safely into a new folder under ``root`` named
    after the file; returns ``uploads.Extracted`` or raises ``UploadError`` (nothing is kept)."""
    from .uploads import extract_dataset

    stem = Path(name).stem if Path(name).stem.strip("-._ ") else "dataset"
    return extract_dataset(io.BytesIO(data), unique_run_path(root, stem))


# -- linear probes -------------------------------------------------------------------------------
def list_probes(root: str | Path) -> list[Path]:
    """Probe folders directly under ``root`` (the runs folder), newest first."""
    return list_runs(root, PROBE_MANIFEST)


def read_probe(path: str | Path) -> dict | None:
    """A probe folder's manifest, or None when it is unreadable."""
    return read_manifest(path, PROBE_MANIFEST)


def probe_choices(root: str | Path) -> dict[str, str]:
    """Backbone name (``probe:<folder>``) -> description, for the probes under ``root``."""
    choices = {}
    for path in list_probes(root):
        m = read_probe(path)
        if m is not None:
            choices[probe_name(path)] = (
                f"Probe “{path.name}”: {m.get('backbone')} + linear head, {len(m.get('classes', []))} classes, "
                f"val accuracy {100 * m.get('val_accuracy', float('nan')):.0f} %"
            )
    return choices


def probe_rows(root: str | Path) -> list[dict]:
    """One row per probe folder under ``root``, for a table."""
    rows = []
    for path in list_probes(root):
        m = read_probe(path) or {}
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


def short_backbone(name: str) -> str:
    """A backbone's name for run names and captions: a probe by its folder's name, not its full path."""
    if not name.startswith(PROBE_PREFIX):
        return name
    folder = Path(name.removeprefix(PROBE_PREFIX)).name
    return folder if folder.startswith("probe") else f"probe-{folder}"


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
    Figure("prototypes_only_top1", "Top-1, NMF prototypes only", "head rows replaced by Σ alpha_i p_i (Table 3)"),
    Figure("residual_only_top1", "Top-1, residual only", "head rows replaced by the residual R (Table 3)"),
    Figure("feature_reconstruction_error", "Feature reconstruction error", "‖A − E P‖ / ‖A‖ of the NMF", False),
    Figure("head_reconstruction_error", "Head reconstruction error", "‖v − Σ alpha_i p_i‖ / ‖v‖", False),
]


def evaluation_rows(metrics: Mapping) -> list[dict]:
    """The scalar figures of ``evaluate_run`` as (figure, value, meaning) rows, values formatted."""
    rows = []
    for f in FIGURES:
        if f.key in metrics:
            value = metrics[f.key]
            text = f"{100 * value:.1f} %" if f.percent else f"{value:.3g}"
            rows.append({"figure": f.name, "value": text, "meaning": f.meaning})
    strategy = metrics.get("strategy")
    for name, mean in metrics.get("heatmap_fidelity", {}).items():
        worst = metrics.get("heatmap_fidelity_min", {}).get(name)
        mark = " (this run)" if name == strategy else ""
        rows.append(
            {
                "figure": f"Heatmap fidelity, {name}{mark}",
                "value": f"{mean:.3f}" + (f" (worst {worst:.3f})" if worst is not None else ""),
                "meaning": "|Pearson| of NMF and refined heatmaps on held-out images",
            }
        )
    rows.append({"figure": "Images", "value": str(metrics.get("n_images", "")), "meaning": "evaluated images"})
    return rows


def fidelity_rows(metrics: Mapping) -> list[dict]:
    """Heatmap fidelity per refinement strategy: mean and worst prototype."""
    return [
        {
            "strategy": name,
            "mean": mean,
            "worst prototype": metrics.get("heatmap_fidelity_min", {}).get(name, float("nan")),
            "this run": name == metrics.get("strategy"),
        }
        for name, mean in metrics.get("heatmap_fidelity", {}).items()
    ]


def fidelity_per_class_rows(metrics: Mapping, labels: Sequence[str]) -> list[dict]:
    """Per decomposed class, the mean fidelity of each strategy."""
    per = metrics.get("heatmap_fidelity_per_class", {})
    classes = sorted({int(c) for values in per.values() for c in values})
    return [{"class": labels[c], **{s: per[s].get(str(c)) for s in per}} for c in classes]


def table3_rows(metrics: Mapping) -> list[dict]:
    """The paper's Table-3 analogue: top-1 with NMF prototypes only, residual only, and both."""
    return [
        {"head rows": "NMF prototypes only", "top-1": metrics["prototypes_only_top1"]},
        {"head rows": "residual only", "top-1": metrics["residual_only_top1"]},
        {"head rows": "both (prototype network)", "top-1": metrics["top1_prototype"]},
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
