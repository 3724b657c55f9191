"""The shortcut benchmark's edit in space: the background parts the mask rule finds, their cells left out of
the pooling (``method.spatial``), scored on the test split like the other repairs.

``space_by_discovered_parts``: the parts chosen are those of the prototypes the mask rule switches off
(``mask_rule.mask_rule_scales``: positive heatmap mass mostly on the background of 5 masked photos per class,
the rule the app's "switch off every background prototype" applies). For each test photo, the cells where
any chosen part is present (presence >= ``spatial.LEVEL``, what the part map draws) are left out of the
average pooling; the model's own head (the prototypes sum to it exactly) reads the rest. No weight changes.

``keep_object_parts`` (in its diagnostics and summary): the same parts read the other way round, the edit keeping
only the ``spatial.KEEP_SHARE`` of each test photo's cells where every *other* part (the object parts, those the
mask rule keeps) is most present; chosen on the val split among the rules of ``bench/shortcut_signed_space.py``.

Beside accuracy it says what the mask did, against the ground truth the benchmark has: the share of the test
photos' background cells and of their object cells that were left out (a cell is background when at least
half of it is, as in ``object_cells_logits``), where each discovered part's presence lies (its share on the
background cells), and, as a diagnostic only, the same edit at a few other
presence levels (read on test, so not a method: no level was chosen on them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..backbones import Backbone
from ..data.features import extract_features
from ..data.synthetic_shortcut import read_groups, read_object_mask
from ..evaluation.intervention import group_accuracy
from ..method.head import PrototypeHead, read_cells
from ..method.spatial import KEEP_SHARE, LEVEL, SpatialEdit, chosen_parts, edited_pooling, kept_cells, left_out_cells
from ..runs import Run

NAME = "space_by_discovered_parts"
LABEL = "cells of the background parts left out of the pooling (mask rule, 5 masks per class)"
NOTE = (
    "parts left out: the parts of the prototypes the mask rule switches off; what changes is which cells are "
    "pooled (a change of the model's computation), not a weight"
)
#: the protocol's sentence about this method (``ShortcutConfig.protocol``); the level was fixed on the sample photos
#: of Intervene (the part map's drawing level) before the benchmark ever ran it
PROTOCOL = (
    f"space_by_discovered_parts: the parts of the prototypes prototypes_by_mask switches off; on each test photo "
    f"the cells where any of them has presence >= {LEVEL:g} (PrototypeHead.presence, 1 = its 0.99 training "
    f"quantile) are left out of the average pooling, and the model's head reads the mean of the other cells. "
    f"keep_object_parts (reported with it): each test photo pools only the {100 * KEEP_SHARE:g} % of its cells where the "
    f"parts prototypes_by_mask keeps are most present (summed presence), a share chosen on val."
)
KEEP_NOTE = (
    "parts kept: every part the mask rule does not switch off (the object parts); each test photo pools only the cells "
    "where they are most present (a change of the model's computation), no weight changed"
)
#: other presence levels reported for the diagnostic only (never used to choose the method's level)
DIAGNOSTIC_LEVELS = (0.1, 0.5, 1.0)


def background_cells(data: Path, files: list[str], grid: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) bool: the cells at least half background in each photo's object mask."""
    background = torch.from_numpy(np.stack([~read_object_mask(data, f) for f in files])).float()
    return F.interpolate(background[:, None], size=grid, mode="area")[:, 0] >= 0.5


def space_by_discovered_parts(
    backbone: Backbone,
    run: Run,
    head: PrototypeHead,
    data: Path,
    by_mask: torch.Tensor,
    split: str = "test",
    cache: Path | None = None,
    level: float = LEVEL,
) -> tuple[dict, dict]:
    """(the method's result as ``shortcut._result`` gives it, the diagnostics) on ``split``, for the background
    prototypes of ``by_mask`` ((C, k), 0 = switched off by the mask rule). Works for any decomposition the run
    holds: the parts are ``head.part_vectors``, whatever discovery made them."""
    rows = [row for row in read_groups(data).values() if row["split"] == split]
    files, groups = [row["file"] for row in rows], [row["group"] for row in rows]
    feats = extract_features(backbone, [data / f for f in files], cache_dir=cache)
    names = run.class_names
    labels = torch.tensor([names.index(row["class"]) for row in rows])
    chosen = [(int(run.classes[c]), int(i)) for c, i in (by_mask == 0).nonzero().tolist()]
    edit = SpatialEdit(tuple(chosen), level)
    pooling = edited_pooling(head, feats.feats, edit)
    accuracy = group_accuracy(head(pooling.pooled)[0], labels, groups)
    background = background_cells(data, files, (feats.feats.shape[1], feats.feats.shape[2]))

    def shares(lvl: float) -> dict:
        mask = (
            left_out_cells(feats.feats, chosen_parts(head, SpatialEdit(tuple(chosen))), lvl, head.presence_damping)
            if chosen
            else torch.zeros_like(background)
        )
        return {
            "background_cells_left_out": float(mask[background].float().mean()),
            "object_cells_left_out": float(mask[~background].float().mean()),
        }

    result = {
        "mean_acc": accuracy["mean"],
        "worst_group_acc": accuracy["worst_group"],
        "numbers_changed": len(chosen),
        "per_group": accuracy["per_group"],
    }
    # the same parts the other way round: keep only where the object parts (all the others) are most present
    objects = [(int(run.classes[c]), int(i)) for c, i in (by_mask != 0).nonzero().tolist()]
    keep_object_parts = None  # when the mask rule calls every part background, there is nothing to keep
    if objects:
        kept = group_accuracy(
            head(edited_pooling(head, feats.feats, SpatialEdit(keep_where=tuple(objects))).pooled)[0], labels, groups
        )
        keep_mask = ~kept_cells(feats.feats, chosen_parts(head, SpatialEdit(tuple(objects))), KEEP_SHARE, head.presence_damping)
        keep_object_parts = {
            "mean_acc": kept["mean"],
            "worst_group_acc": kept["worst_group"],
            "keep_share": KEEP_SHARE,
            "parts_kept": len(objects),
            "background_cells_left_out": float(keep_mask[background].float().mean()),
            "object_cells_left_out": float(keep_mask[~background].float().mean()),
        }
    sweep = {}
    for lvl in DIAGNOSTIC_LEVELS:
        other = group_accuracy(head(edited_pooling(head, feats.feats, SpatialEdit(tuple(chosen), lvl)).pooled)[0], labels, groups)
        sweep[f"{lvl:g}"] = {"mean_acc": other["mean"], "worst_group_acc": other["worst_group"], **shares(lvl)}
    # where each discovered part lies: the share of its presence mass (all test photos) on background cells
    presence = torch.einsum("nhwd,ckd->nhwck", read_cells(feats.feats, head.presence_damping), head.part_vectors)
    on_background = presence[background].sum(dim=0) / presence.flatten(0, 2).sum(dim=0).clamp_min(1e-12)
    diagnostics = {
        "level": level,
        "part_presence_on_background": {names[c]: [round(float(f), 4) for f in row] for c, row in enumerate(on_background)},
        "background_cell_share": float(background.float().mean()),
        "parts_left_out": [f"{names[run.classes.tolist().index(c)]} P{i + 1}" for c, i in chosen],
        "cells_left_out": float(pooling.left_out_share.mean()),
        "photos_keeping_every_cell": int(pooling.all_left_out.sum()),
        **shares(level),
        "other_levels_diagnostic": sweep,
        "keep_object_parts": keep_object_parts,
    }
    return result, diagnostics


def summary(per_seed: dict, methods: dict) -> dict:
    """shortcut.json's ``space_by_discovered_parts``: mean over seeds of accuracy, what was changed, and how
    well the left-out cells matched the background; and the share of DFR's worst-group gain it recovers."""
    diags = [r["space"] for r in per_seed.values()]
    base, dfr, m = (methods[name]["worst_group_acc"] for name in ("original", "dfr", NAME))
    keys = ("cells_left_out", "background_cells_left_out", "object_cells_left_out", "background_cell_share")
    levels = diags[0]["other_levels_diagnostic"] if diags else {}
    kept = [d["keep_object_parts"] for d in diags if d.get("keep_object_parts")]
    keep_worst = float(np.mean([k["worst_group_acc"] for k in kept])) if kept else None
    keep_object_parts = kept and {
        "changed": f"{KEEP_NOTE}; {100 * KEEP_SHARE:g} % of each photo's cells kept",
        "mean_acc": float(np.mean([k["mean_acc"] for k in kept])),
        "worst_group_acc": keep_worst,
        "gain_recovered": (keep_worst - base) / (dfr - base) if dfr > base else None,
        **{
            key: float(np.mean([k[key] for k in kept]))
            for key in ("parts_kept", "background_cells_left_out", "object_cells_left_out")
        },
        "per_seed": {seed: r["space"]["keep_object_parts"] for seed, r in per_seed.items()},
    }
    return {
        "keep_object_parts": keep_object_parts or None,
        "mean_acc": methods[NAME]["mean_acc"],
        "worst_group_acc": m,
        "gain_recovered": (m - base) / (dfr - base) if dfr > base else None,
        "changed": f"{NOTE}; presence level {diags[0]['level']:g}" if diags else NOTE,
        "parts_left_out": {seed: r["space"]["parts_left_out"] for seed, r in per_seed.items()},
        **{key: float(np.mean([d[key] for d in diags])) for key in keys},
        "photos_keeping_every_cell": float(np.mean([d["photos_keeping_every_cell"] for d in diags])),
        # the most background-bound part of any class, per seed: how close discovery came to a background part
        "most_background_part": [max(max(row) for row in d["part_presence_on_background"].values()) for d in diags],
        "other_levels_diagnostic": {
            lvl: {
                key: float(np.mean([d["other_levels_diagnostic"][lvl][key] for d in diags]))
                for key in ("mean_acc", "worst_group_acc", "background_cells_left_out", "object_cells_left_out")
            }
            for lvl in levels
        },
    }


def summary_lines(space: dict) -> list[str]:
    """shortcut.md's lines about the edit in space."""
    lines = [
        f"Edit in space ({space['changed']}): {100 * space['cells_left_out']:.0f} % of the test cells left out, "
        f"{100 * space['background_cells_left_out']:.0f} % of the background cells and "
        f"{100 * space['object_cells_left_out']:.0f} % of the object cells. The most background-bound discovered "
        f"part has {', '.join(f'{100 * f:.0f}' for f in space['most_background_part'])} % of its presence on the "
        f"background (per seed; the background is {100 * space['background_cell_share']:.0f} % of the cells)."
    ]
    keep = space.get("keep_object_parts")
    if keep:
        recovered = "n/a (DFR gained nothing)" if keep["gain_recovered"] is None else f"{100 * keep['gain_recovered']:.0f} %"
        lines.append(
            f"Edit in space, the other way round ({keep['changed']}): worst group {100 * keep['worst_group_acc']:.1f} %, mean "
            f"{100 * keep['mean_acc']:.1f} %, {recovered} of DFR's worst-group gain recovered; "
            f"{100 * keep['background_cells_left_out']:.0f} % of the background cells and "
            f"{100 * keep['object_cells_left_out']:.0f} % of the object cells left out."
        )
    for lvl, v in space["other_levels_diagnostic"].items():
        lines.append(
            f"- diagnostic, presence level {lvl}: worst group {100 * v['worst_group_acc']:.1f} %, mean "
            f"{100 * v['mean_acc']:.1f} %, background cells left out {100 * v['background_cells_left_out']:.0f} "
            f"%, object cells {100 * v['object_cells_left_out']:.0f} %"
        )
    return lines
