"""The runs and probes a session sees, as the pages list them, computed without Streamlit: the runs table
(Decompose), a run's one-line caption and the probes offered as backbones (sidebar), the runs of one model
(Evaluate's k sweep).

Manifests only (no tensors are read); plain Python, so it is tested without a browser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from protolib.backbones import BackboneError
from protolib.backbones.probe_models import PROBE_MANIFEST, probe_name, read_probe_manifest
from protolib.method.discovery import DEFAULT_DISCOVERY, DISCOVERY_LABELS
from protolib.runs.listing import SavedRun, list_runs
from protolib.runs.names import short_backbone


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


def visible_run_rows(runs: Mapping[str, SavedRun], published: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """``run_rows`` for the runs a session sees, by the name each is shown under (``runs``' keys): the
    backbone by its short name (a probe's folder name, never its path) and who sees the run."""
    rows = []
    for key, row in zip(runs, run_rows(list(runs.values()))):
        if row["backbone"] != "(damaged)":
            row["backbone"] = short_backbone(str(row["backbone"]))
        rows.append({"run": key, "visible to": "everyone" if key in published else "you", **row} | {"run": key})
    return rows
