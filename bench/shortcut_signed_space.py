"""The shortcut benchmark's edit in space with other rules for *which cells* are "where the background part is".

    OMP_NUM_THREADS=1 protoscope shortcut-benchmark --out runs/shortcut-bench --seeds 3
    OMP_NUM_THREADS=1 .venv/bin/python bench/shortcut_signed_space.py runs/shortcut-bench

The parts are the benchmark's (each seed's saved run, the paper's NMF; the background parts are those of the
prototypes the mask rule switches off, 5 masks per class, as ``space_by_discovered_parts``). The edit leaves the
chosen cells out of the average pooling and the model's own head reads the rest; no weight changes. The benchmark's
rule leaves out a cell where a background part's presence ``relu(f) . p`` reaches 0.3; object cells are louder
(``shortcut_channels.py``), so every part is present on them too. The rules here ask instead *which part a cell is*:

- ``owner``: per class with background parts, the background parts' share of the cell's presence over all of the
  class's parts (presence normalised per cell), at least t;
- ``contribution``: per class with background parts, the cell's heatmap over the chosen prototypes (``f . p~``, what
  the cell adds to the class's logit through them) is positive and larger than the class's other prototypes' sum:
  the cell's contribution to the logit is carried by the background prototypes (evidence-signed);
- ``contribution, top class``: the same for the class the model predicts for the photo only;
- ``most present part``: the background parts chosen instead by ownership on the same 5 masked photos per class
  (a part whose cells, those where it is the class's most present part, are >= 90 % background), and a cell left
  out where such a part is its class's most present part;
- ``all but the q lowest``: per photo, every cell left out but the share q with the lowest background share (the
  owner rule's share, ranked within the photo instead of thresholded); beside it, as a reference that reads no
  part, all but the q loudest cells (largest ``||f||``);
- ``all but where the object parts are``: per photo, every cell left out but the share q where the parts the mask
  rule keeps (every class's non-background parts) are most present (their summed presence): the edit keeps the
  object instead of hunting the background.

A cell is left out when any class's rule says so. Each rule is read on the *val* split (the labelled set DFR uses;
the choice is the best val worst group) and on the test split the benchmark reports, with the share of DFR's
worst-group gain recovered on test (DFR and the original model from shortcut.json, same seeds).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from protolib.backbones.parts_net import build_parts_net
from protolib.benchmarks.mask_rule import background_fractions, mask_photos
from protolib.benchmarks.shortcut_config import ShortcutConfig
from protolib.benchmarks.shortcut_space import background_cells
from protolib.data.features import extract_features
from protolib.data.synthetic_shortcut import read_groups
from protolib.evaluation.intervention import group_accuracy
from protolib.method.head import PrototypeHead
from protolib.method.spatial import left_out_cells, pool_kept
from protolib.runs import load_run

#: (features (N, H, W, D), head, chosen (C, k) bool, original logits (N, C_all)) -> left out (N, H, W)
Rule = Callable[[torch.Tensor, PrototypeHead, torch.Tensor, torch.Tensor], torch.Tensor]


def _presence_rule(level: float) -> Rule:
    def rule(f, head, chosen, logits):
        parts = head.part_vectors[chosen]
        return left_out_cells(f, parts, level)

    return rule


def _owner_rule(share: float) -> Rule:
    def rule(f, head, chosen, logits):
        out = torch.zeros(f.shape[:3], dtype=torch.bool)
        for c in chosen.any(dim=1).nonzero().flatten().tolist():
            presence = torch.einsum("nhwd,kd->nhwk", f.clamp_min(0), head.part_vectors[c])
            mine = presence[..., chosen[c]].sum(-1) / presence.sum(-1).clamp_min(1e-12)
            out |= mine >= share
        return out

    return rule


def _carried(f: torch.Tensor, head: PrototypeHead, chosen: torch.Tensor, c: int) -> torch.Tensor:
    heat = torch.einsum("nhwd,kd->nhwk", f, head.refined_prototypes[c])
    background, other = heat[..., chosen[c]].sum(-1), heat[..., ~chosen[c]].sum(-1)
    return (background > 0) & (background > other)


def _contribution(f, head, chosen, logits):
    out = torch.zeros(f.shape[:3], dtype=torch.bool)
    for c in chosen.any(dim=1).nonzero().flatten().tolist():
        out |= _carried(f, head, chosen, c)
    return out


def _contribution_top(f, head, chosen, logits):
    out = torch.zeros(f.shape[:3], dtype=torch.bool)
    top = logits.argmax(dim=1)
    for c in chosen.any(dim=1).nonzero().flatten().tolist():
        label = int(head.classes[c])
        out |= _carried(f, head, chosen, c) & (top == label).view(-1, 1, 1)
    return out


def _owned(f: torch.Tensor, head: PrototypeHead, chosen: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool: cells whose most present part, in some class with chosen parts, is a chosen one."""
    out = torch.zeros(f.shape[:3], dtype=torch.bool)
    for c in chosen.any(dim=1).nonzero().flatten().tolist():
        owner = torch.einsum("nhwd,kd->nhwk", f.clamp_min(0), head.part_vectors[c]).argmax(dim=-1)
        out |= chosen[c][owner]
    return out


def purity_choice(backbone, run, head: PrototypeHead, data: Path, cache: Path, purity: float = 0.9) -> torch.Tensor:
    """(C, k) bool: the parts that, on the mask rule's photos (5 masked heldout photos per class), own (are the most
    present part of) cells that are at least ``purity`` background."""
    chosen = torch.zeros(head.refined_prototypes.shape[:2], dtype=torch.bool)
    for c, paths in enumerate(mask_photos(run, data, "heldout", ShortcutConfig().mask_photos_per_class)):
        files = [Path(p).relative_to(data) for p in paths]
        f = extract_features(backbone, paths, cache_dir=cache).feats.float()
        background = background_cells(data, files, tuple(f.shape[1:3]))
        owner = torch.einsum("nhwd,kd->nhwk", f.clamp_min(0), head.part_vectors[c]).argmax(dim=-1)
        for i in range(head.k):
            mine = owner == i
            chosen[c, i] = bool(mine.any()) and float(background[mine].float().mean()) >= purity
    return chosen


RULES: dict[str, Rule] = {
    "presence >= 0.3 (the benchmark's rule)": _presence_rule(0.3),
    **{f"owner, share >= {s:g}": _owner_rule(s) for s in (0.5, 0.7, 0.9)},
    "contribution carried by the background prototypes": _contribution,
    "contribution carried by the background prototypes, top class only": _contribution_top,
    "most present part is a background part": lambda f, head, chosen, logits: _owned(f, head, chosen),
}


def _background_share(f: torch.Tensor, head: PrototypeHead, chosen: torch.Tensor) -> torch.Tensor:
    """(N, H, W): per cell, the largest share of its presence that the background parts of one class take."""
    out = torch.zeros(f.shape[:3])
    for c in chosen.any(dim=1).nonzero().flatten().tolist():
        presence = torch.einsum("nhwd,kd->nhwk", f.clamp_min(0), head.part_vectors[c])
        out = torch.maximum(out, presence[..., chosen[c]].sum(-1) / presence.sum(-1).clamp_min(1e-12))
    return out


def _keep_lowest(score: torch.Tensor, keep: float) -> torch.Tensor:
    """Left out: every cell of a photo but the ``keep`` share with the lowest score."""
    flat = score.flatten(1)
    n = max(1, round(keep * flat.shape[1]))
    kept = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, flat.argsort(dim=1)[:, :n], True)
    return ~kept.view_as(score)


for _q in (0.1, 0.2, 0.3):
    RULES[f"all but the {100 * _q:.0f} % of each photo's cells with the lowest background share"] = (
        lambda f, head, chosen, logits, q=_q: _keep_lowest(_background_share(f, head, chosen), q)
    )
    RULES[f"reference, no part read: all but the {100 * _q:.0f} % loudest cells of each photo"] = (
        lambda f, head, chosen, logits, q=_q: _keep_lowest(-f.norm(dim=-1), q)
    )


def _object_presence(f: torch.Tensor, head: PrototypeHead, chosen: torch.Tensor) -> torch.Tensor:
    """(N, H, W): per cell, the summed presence of every class's parts that are *not* chosen as background."""
    return torch.einsum("nhwd,md->nhw", f.clamp_min(0), head.part_vectors[~chosen])


for _q in (0.1, 0.2, 0.3):
    RULES[f"all but the {100 * _q:.0f} % of each photo's cells where the object parts are most present"] = (
        lambda f, head, chosen, logits, q=_q: _keep_lowest(-_object_presence(f, head, chosen), q)
    )

#: rules read with the parts chosen by :func:`purity_choice` instead of the mask rule's
PURITY_RULES = ("most present part is a background part",)


#: reference rows, not methods (they read every test photo's mask): the ground-truth background cells, a random
#: share of them, with a random share of the object cells, left out: how selective a rule must be
REFERENCES = tuple((b, o) for b in (1.0, 0.9, 0.7) for o in (0.0, 0.2, 0.4))


def _reference(background: torch.Tensor, keep_background: float, object_share: float, seed: int) -> torch.Tensor:
    draw = torch.rand(background.shape, generator=torch.Generator().manual_seed(seed))
    return torch.where(background, draw < keep_background, draw < object_share)


def seed_figures(root: Path, data: Path, seed: int) -> dict[str, dict[str, dict]]:
    cfg = ShortcutConfig()
    backbone = build_parts_net(root / "parts_net.safetensors")
    cache = root / "features"
    run = load_run(root / "run", backbone)
    head = run.head(backbone)
    fractions = background_fractions(backbone, run, data, "heldout", cfg.mask_photos_per_class, cache)
    by_mask = fractions > cfg.mask_threshold
    by_purity = purity_choice(backbone, run, head, data, cache)
    print(seed, "parts chosen by the mask rule", int(by_mask.sum()), "by ownership purity", int(by_purity.sum()), flush=True)
    names = run.class_names
    figures: dict[str, dict[str, dict]] = {}
    for split in ("val", "test"):
        rows = [row for row in read_groups(data).values() if row["split"] == split]
        files, groups = [row["file"] for row in rows], [row["group"] for row in rows]
        labels = torch.tensor([names.index(row["class"]) for row in rows])
        f = extract_features(backbone, [data / name for name in files], cache_dir=cache).feats.float()
        background = background_cells(data, files, tuple(f.shape[1:3]))
        logits = head(f)[0]
        masks = {name: rule(f, head, by_purity if name in PURITY_RULES else by_mask, logits) for name, rule in RULES.items()}
        for b, o in REFERENCES:
            masks[f"reference: {100 * b:.0f} % of the true background cells and {100 * o:.0f} % of the object cells"] = _reference(
                background, b, o, seed
            )
        for name, mask in masks.items():
            pooled, _ = pool_kept(f, mask)
            acc = group_accuracy(head(pooled)[0], labels, groups)
            figures.setdefault(name, {})[split] = {
                "worst": acc["worst_group"],
                "mean": acc["mean"],
                "bg": float(mask[background].float().mean()),
                "obj": float(mask[~background].float().mean()),
            }
    for name in figures:
        print(seed, name, figures[name], flush=True)
    return figures


def main(out: Path) -> None:
    torch.set_num_threads(1)
    bench = json.loads((out / "shortcut.json").read_text())
    seeds = [int(s) for s in bench["per_seed"]]
    per_seed = {s: seed_figures(out / f"seed-{s}", out / "data", s) for s in seeds}
    original = [bench["methods"]["original"]["per_seed"][str(s)]["worst_group_acc"] for s in seeds]
    dfr = [bench["methods"]["dfr"]["per_seed"][str(s)]["worst_group_acc"] for s in seeds]
    dfr_worst = 100 * np.mean(dfr)
    print(f"\nEdit in space by rule, mean over seeds {', '.join(map(str, seeds))} (DFR's test worst group {dfr_worst:.1f} %)\n")
    print(
        "| rule | worst group %, val | worst group %, test | mean %, test | share of DFR's worst-group gain, test | "
        "background cells left out %, test | object cells left out %, test |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in per_seed[seeds[0]]:
        val = [per_seed[s][name]["val"] for s in seeds]
        test = [per_seed[s][name]["test"] for s in seeds]
        worst = np.mean([t["worst"] for t in test])
        gain = (worst - np.mean(original)) / (np.mean(dfr) - np.mean(original))
        print(
            f"| {name} | {100 * np.mean([v['worst'] for v in val]):.1f} | {100 * worst:.1f} | "
            f"{100 * np.mean([t['mean'] for t in test]):.1f} | {100 * gain:.0f} % | "
            f"{100 * np.mean([t['bg'] for t in test]):.0f} | {100 * np.mean([t['obj'] for t in test]):.0f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: shortcut_signed_space.py OUT  (OUT of `protoscope shortcut-benchmark`)")
    main(Path(sys.argv[1]))
