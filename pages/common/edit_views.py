"""What Intervene shows, computed without Streamlit: the intervention as a (C, k) scale and its note, the top
classes after an edit, the table of every prototype and its edits, accuracy per class and per group.

Plain Python on tensors and dicts, so it is tested without a browser; the page only lays it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch


# -- one intervention --------------------------------------------------------------------------------
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
        changed = [f"P{i + 1} off" if float(v) == 0 else f"P{i + 1} ×{float(v):g}" for i, v in enumerate(scale[c]) if float(v) != 1]
        if changed:
            parts.append(f"{name}: " + ", ".join(changed))
    return "; ".join(parts) or "no change"


def top_logit_rows(
    class_names: Sequence[str], original: torch.Tensor, edited: torch.Tensor, n: int = 5, decomposed=(), include=()
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
                "class": class_names[c],
                "logit": float(edited[c]),
                "original logit": float(original[c]),
                "change": float(edited[c] - original[c]),
                "probability": float(probs[c]),
                "original rank": original_rank.get(c),
                "decomposed": c in decomposed,
            }
        )
    return rows


# -- editing across classes (Intervene) -------------------------------------------------------------
#: the columns of the prototype table a person edits: the selection and the name
SELECT, NAME = "select", "name"


def swatch(colour: str) -> str:
    """A colour as a small SVG image (a data URL), for an image column of a table."""
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='18' height='18'><rect width='18' height='18' rx='4' "
        f"fill='{colour}' stroke='rgba(0,0,0,.2)'/></svg>"
    )
    return "data:image/svg+xml;utf8," + svg.replace("#", "%23").replace("<", "%3C").replace(">", "%3E").replace(" ", "%20")


def scale_text(value: float) -> str:
    """An intervention's value as the table shows it: ``on``, ``off`` or ``×0.5``."""
    return "on" if value == 1 else "off" if value == 0 else f"×{value:g}"


def prototype_table(
    class_names: Sequence[str],
    k: int,
    prototype_names: Sequence[Sequence[str]],
    scale: torch.Tensor,
    selected: set[tuple[int, int]] | frozenset = frozenset(),
    pending: Mapping[tuple[int, int], str] | None = None,
    shares: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
    colours: Sequence[str] = (),
    health: Sequence[Sequence[str]] | None = None,
) -> list[dict]:
    """One row per prototype of the run, class by class (row ``c * k + i`` is prototype i of class c): whether
    it is selected, its class, name (P1…), colour, label (an unsaved edit in ``pending`` shown), its share of the
    class's logit (``shares`` (C, k), on the class's training photos), the share of its heatmap on the background
    (``background`` (C, k), where the data has object masks), its scale now, and whether it is dead or a
    duplicate (``health`` (C, k) notes of ``prototype_health``, "" when neither)."""
    pending = pending or {}
    rows = []
    for c, name in enumerate(class_names):
        for i in range(k):
            row = {
                SELECT: (c, i) in selected,
                "class": name,
                "prototype": f"P{i + 1}",
                "colour": swatch(colours[i % len(colours)]) if colours else "",
                NAME: pending.get((c, i), prototype_names[c][i]),
                "share of the logit": None if shares is None else float(shares[c, i]),
                "scale": scale_text(float(scale[c, i])),
            }
            if background is not None:
                row["on the background"] = float(background[c, i])
            if health is not None:
                row["dead or duplicate"] = health[c][i]
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
        if NAME in changes:
            pending[where] = "" if changes[NAME] is None else str(changes[NAME])
    return selected, pending


def prototype_names_after(
    prototype_names: Sequence[Sequence[str]], decomposed: Sequence[int], pending: Mapping[tuple[int, int], str]
) -> dict[int, dict[int, str]]:
    """The run's labels (a (C, k) grid) with the unsaved edits applied, keyed as ``Run.with_prototype_names`` takes them
    (class label in the model's label space -> prototype position -> name); emptied names are dropped."""
    merged = {}
    for c, label in enumerate(decomposed):
        names = {i: pending.get((c, i), text).strip() for i, text in enumerate(prototype_names[c])}
        names = {i: text for i, text in names.items() if text}
        if names:
            merged[int(label)] = names
    return merged


def prototype_name_changes(
    prototype_names: Sequence[Sequence[str]], pending: Mapping[tuple[int, int], str]
) -> dict[tuple[int, int], str]:
    """The unsaved label edits that differ from the saved labels."""
    return {
        (c, i): text.strip()
        for (c, i), text in pending.items()
        if c < len(prototype_names) and i < len(prototype_names[c]) and text.strip() != prototype_names[c][i]
    }


def prototype_caption(class_name: str, i: int, name: str = "") -> str:
    """How a page names one prototype: ``tench · P2 “fins”`` (its label when it has one)."""
    return f"{class_name} · P{i + 1}" + (f" “{name}”" if name else "")


def scaled_settings(settings: Mapping[tuple[int, int], float], targets, value: float) -> dict[tuple[int, int], float]:
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


def class_accuracy_rows(truth: torch.Tensor, before: torch.Tensor, after: torch.Tensor, names: Sequence[str]) -> list[dict]:
    """Per class of the held-out photos (``truth`` indexes ``names``): photos, top-1 before and after an edit,
    and the change; the classes that changed most come first."""
    rows = []
    for label in sorted(set(truth.tolist())):
        mask = truth == label
        was, now = float((before[mask] == label).float().mean()), float((after[mask] == label).float().mean())
        rows.append({"class": names[int(label)], "photos": int(mask.sum()), "before": was, "after": now, "change": now - was})
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
