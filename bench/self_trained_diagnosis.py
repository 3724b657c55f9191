"""Why self-training (``self_trained_parts.py``) cannot climb toward the argmax oracle: how good its pseudo-labels
are. On each class's 60 training photos of the ground-truth parts benchmark's saved seeds, the keypoints (read
here only to judge, never to fit) say, for the cells each prototype is given (its distinct peak per photo,
``distinct_peaks``), how often that cell is on *some* part of the class (within ``RADIUS`` px of a visible part's
keypoint) and how often it is on the prototype's most frequent part (the label's purity: the oracle's labels
are pure by construction), for the evidence-weighted factorisation's prototypes and after each round of
self-training; and, for the cells that carry the most evidence (the k largest local maxima of ``f . v`` per
photo, another source of labels one could use), how often they are on a part.

    OMP_NUM_THREADS=1 .venv/bin/python bench/self_trained_diagnosis.py runs/parts-tune 10 11 12 13
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from _parts_ideas import parse
from parts_ceiling import keypoints_of, part_cells
from self_trained_parts import distinct_peaks, positives, refit

from protolib.backbones.parts_net import build_parts_net
from protolib.benchmarks.parts import BenchConfig
from protolib.evaluation.metrics import training_matrices
from protolib.method.discovery import evidence_weights
from protolib.method.nmf import batched_nmf
from protolib.runs import load_run

ROUNDS = 3


def label_quality(truth: torch.Tensor, where: torch.Tensor) -> tuple[float, float]:
    """(share of assigned cells on some part, share on their prototype's most frequent part) over photos x k."""
    hits = torch.stack([truth[i, where[i]] for i in range(len(where))]).float()  # (n, k, P)
    on_part = float(hits.any(dim=2).float().mean())
    purity = float(hits.sum(dim=0).max(dim=1).values.sum() / where.numel())
    return on_part, purity


def class_rows(root: Path, seed: int):
    size = BenchConfig().size
    backbone = build_parts_net(root / "parts_net.safetensors")
    weight = backbone.head_weight.float()
    keypoints = keypoints_of(root / "data")
    for path in sorted((root / "true").glob("run-k*")):
        if not path.name[5:].isdigit():
            continue
        run = load_run(path, backbone)
        for A, c, entry in zip(training_matrices(run, backbone, root / "features"), run.classes.tolist(), run.manifest["classes"]):
            paths = run.manifest["images"][entry["folder"]]
            n, A = len(paths), A.float()
            side = round((len(A) / n) ** 0.5)
            X = A.reshape(n, -1, A.shape[1])
            truth = part_cells(paths, c, keypoints, side, size)
            evidence = (X @ weight[c]).reshape(n, 1, side, side)
            local_max = (evidence == F.max_pool2d(evidence, 3, 1, 1)).flatten(1)
            top = evidence.flatten(1).masked_fill(~local_max, -torch.inf).topk(run.k, dim=1).indices
            row = [label_quality(truth, top)[0]]
            P = batched_nmf([A * evidence_weights(A, weight[c])[:, None]], run.k, random_state=seed).prototypes[0].float()
            for r in range(ROUNDS + 1):
                where, seen = distinct_peaks(X @ P.T)
                row += label_quality(truth, where)
                if r < ROUNDS:
                    P = refit(X, P, positives(where, side, 0), seen, 0.0, 300)
            yield c, row


if __name__ == "__main__":
    out, seeds = parse(sys.argv[1:], "self_trained_diagnosis.py")
    torch.set_num_threads(1)
    head = ["evidence peaks on a part"] + [f"round {r}: {what}" for r in range(ROUNDS + 1) for what in ("on a part", "purity")]
    print("| seed | class | " + " | ".join(head) + " |\n|" + "---|" * (len(head) + 2))
    rows = []
    for s in seeds:
        for c, row in class_rows(Path(out) / f"seed-{s}", s):
            rows.append(row)
            print(f"| {s} | {c} | " + " | ".join(f"{100 * v:.0f}" for v in row) + " |", flush=True)
    mean = torch.tensor(rows).mean(dim=0).tolist()
    print("| mean | | " + " | ".join(f"{100 * v:.0f}" for v in mean) + " |")
