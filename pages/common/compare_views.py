"""What Compare shows and preselects, computed without Streamlit: which runs can be compared, readings of
the agreement and of each match, and the tables beside the maps (Evaluate's k sweep uses the same runs).

Plain Python on dicts, so it is tested without a browser; the pages only lay it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from protolib.runs.listing import SavedRun


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
    return bool(class_folder_set(a) & class_folder_set(b)) or any(str(c["name"]).casefold() in names for c in b.get("classes", []))


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
            reading = (
                f"a compromise: another candidate correlates {-r['margin']:.2f} more, but the one-to-one "
                "assignment gave it to another prototype"
            )
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
        {"run": s.name, "prototype": f"P{i + 1}", "mean contribution": float(s.mean_contribution[i]), "share": float(s.shares[i])}
        for s in sides
        for i in range(s.k)
    ]


def k_point_rows(points: Sequence[Mapping]) -> list[dict]:
    """The k-sweep points as table rows, sorted by k."""
    return sorted((dict(p) for p in points), key=lambda p: (p["k"], p["run"]))
