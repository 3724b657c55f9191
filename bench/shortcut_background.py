"""Does a discovery isolate the background into its own prototypes? Read from a finished shortcut benchmark.

    protoscope shortcut-benchmark --out runs/shortcut-bench --seeds 3 [--discovery evidence]
    .venv/bin/python bench/shortcut_background.py runs/shortcut-bench

Per prototype, the share of its positive heatmap mass on the background (``shortcut.json``'s
``background_fraction``, masked heldout photos) and its share of its class's logit (|mean contribution| over the
class's heldout photos the run was made from): how many prototypes sit >= 90 % on the background, how much of the
logit they carry, and how much background the prototype carrying most of the logit holds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from protolib.backbones.parts_net import build_parts_net
from protolib.data.features import extract_features
from protolib.runs import load_run

ISOLATED = 0.9


def main(out: Path) -> None:
    results = json.loads((out / "shortcut.json").read_text())
    isolated, classes_with, top_fraction, carried, n = 0, 0, [], [], 0
    for seed, figures in results["per_seed"].items():
        root = out / f"seed-{seed}"
        backbone = build_parts_net(root / "parts_net.safetensors")
        run = load_run(root / "run", backbone)
        head = run.head(backbone)
        for c, entry in enumerate(run.manifest["classes"]):
            feats = extract_features(backbone, run.manifest["images"][entry["folder"]], cache_dir=root / "features")
            mean = head.contributions(feats.pooled)[:, c].mean(dim=0)
            share = mean.abs() / mean.abs().sum().clamp_min(1e-12)
            fraction = torch.tensor(figures["background_fraction"][entry["name"]])
            n += len(fraction)
            isolated += int((fraction >= ISOLATED).sum())
            classes_with += int(bool((fraction >= ISOLATED).any()))
            top_fraction.append(float(fraction[int(share.argmax())]))
            if (fraction >= ISOLATED).any():
                carried.append(float(share[fraction >= ISOLATED].sum()))
    n_classes = len(top_fraction)
    print(f"discovery: {run.discovery}; {len(results['per_seed'])} seeds, {n_classes} classes, {n} prototypes")
    print(f"prototypes >= {100 * ISOLATED:.0f} % on the background: {isolated} of {n}, in {classes_with} of {n_classes} classes")
    if carried:
        print(f"their share of their class's logit: {100 * min(carried):.0f}-{100 * max(carried):.0f} %")
    print(
        f"background share of the prototype carrying most of the logit: {100 * min(top_fraction):.0f}-"
        f"{100 * max(top_fraction):.0f} %"
    )
    worst = {name: 100 * m["worst_group_acc"] for name, m in results["methods"].items()}
    print("worst group %: " + ", ".join(f"{name} {value:.1f}" for name, value in worst.items()))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: shortcut_background.py OUT  (OUT of `protoscope shortcut-benchmark`)")
    main(Path(sys.argv[1]))
