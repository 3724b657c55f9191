"""The shortcut benchmark's edit in space (``space_by_discovered_parts``, mask rule, 5 masks per class) per
discovery, the shared dictionary (``shared_dictionary.py``) with 1-4 shared parts and sparse coefficients
(``sparse_nmf.py``, beta 0.1) among them: tuned on the *val*
split, then the same on the test split the benchmark reports.

    OMP_NUM_THREADS=1 protoscope shortcut-benchmark --out runs/shortcut-bench --seeds 3
    OMP_NUM_THREADS=1 .venv/bin/python bench/shortcut_discovery_tuning.py runs/shortcut-bench val
    OMP_NUM_THREADS=1 .venv/bin/python bench/shortcut_discovery_tuning.py runs/shortcut-bench test

Reuses each seed's trained model and feature cache; decomposes the heldout photos again per variant (as the
benchmark does) and prints, per variant, the val worst group and mean (mean over seeds), how many prototypes the
mask rule finds, the share of the split's background and object cells left out, and how far the variant isolates
the background in prototypes of its own (per seed: 4 classes x k = 6 = 24 prototypes).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import sparse_nmf
import torch
from shared_dictionary import register

from protolib.backbones.parts_net import build_parts_net
from protolib.benchmarks import shortcut_space as space
from protolib.benchmarks.mask_rule import background_fractions
from protolib.benchmarks.shortcut import decompose_heldout
from protolib.benchmarks.shortcut_config import ShortcutConfig
from protolib.data.features import extract_features

#: (label, discovery, shared parts or None)
VARIANTS = [
    ("the paper's NMF", "nmf", None),
    ("evidence-weighted NMF", "evidence", None),
    *((f"shared dictionary, {s} shared", "shared", s) for s in (1, 2, 3, 4)),
    ("sparse NMF of evidence^6-weighted cells, beta 0.1", "sparse", None),
]


def isolation(backbone, run, head, fractions: torch.Tensor, cache: Path) -> dict[str, float]:
    """How far the variant isolates the background (as ``shortcut_background.py`` reads a finished benchmark):
    prototypes >= 90 % on the background (mask rule's fractions), the share of their class's logit they carry
    (|mean contribution| over the class's heldout photos the run was made from), and the background share of the
    prototype carrying most of the logit, mean over classes."""
    isolated, carried, top = 0, [], []
    for c, entry in enumerate(run.manifest["classes"]):
        feats = extract_features(backbone, run.manifest["images"][entry["folder"]], cache_dir=cache)
        mean = head.contributions(feats.pooled)[:, c].mean(dim=0)
        share = mean.abs() / mean.abs().sum().clamp_min(1e-12)
        background = fractions[c] >= 0.9
        isolated += int(background.sum())
        carried.append(float(share[background].sum()))
        top.append(float(fractions[c][int(share.argmax())]))
    return {"isolated": isolated, "carried": float(np.mean(carried)), "top": float(np.mean(top))}


def seed_figures(root: Path, data: Path, cfg: ShortcutConfig, seed: int, split: str) -> dict[str, dict]:
    backbone = build_parts_net(root / "parts_net.safetensors")
    cache = root / "features"
    figures = {}
    for label, discovery, s in VARIANTS:
        if s is not None:
            register(s)
        run = decompose_heldout(backbone, data, replace(cfg, discovery=discovery), seed, cache)
        head = run.head(backbone)
        fractions = background_fractions(backbone, run, data, "heldout", cfg.mask_photos_per_class, cache)
        by_mask = (fractions <= cfg.mask_threshold).float()
        result, diag = space.space_by_discovered_parts(backbone, run, head, data, by_mask, split, cache)
        figures[label] = {
            "worst": result["worst_group_acc"],
            "mean": result["mean_acc"],
            "chosen": result["numbers_changed"],
            "bg": diag["background_cells_left_out"],
            "obj": diag["object_cells_left_out"],
            **isolation(backbone, run, head, fractions, cache),
        }
        print(seed, label, figures[label], flush=True)
    return figures


def main(out: Path, split: str) -> None:
    torch.set_num_threads(1)
    sparse_nmf.register(0.1)
    cfg = ShortcutConfig()
    seeds = sorted(int(p.name[5:]) for p in out.glob("seed-*"))
    per_seed = [seed_figures(out / f"seed-{s}", out / "data", cfg, s, split) for s in seeds]
    print(f"\nEdit in space on the {split} split, mean over seeds {', '.join(map(str, seeds))}\n")
    print(
        "| discovery | worst group % | mean % | parts left out | background cells left out % | object cells left out % "
        "| prototypes >= 90 % background (of 24) | their logit share % | background share of the top prototype % |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, *_ in VARIANTS:
        m = {key: np.mean([f[label][key] for f in per_seed]) for key in per_seed[0][label]}
        print(
            f"| {label} | {100 * m['worst']:.1f} | {100 * m['mean']:.1f} | {m['chosen']:.1f} | {100 * m['bg']:.0f} | "
            f"{100 * m['obj']:.0f} | {m['isolated']:.1f} | {100 * m['carried']:.0f} | {100 * m['top']:.0f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in ("val", "test"):
        sys.exit("usage: shortcut_discovery_tuning.py OUT val|test  (OUT of `protoscope shortcut-benchmark`)")
    main(Path(sys.argv[1]), sys.argv[2])
