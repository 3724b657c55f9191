"""Feature-extraction throughput: our path against the bare timm forward, on the same preloaded batches.

- ours: ``backbone(x)`` -> spatial features (B, H, W, D) and logits from the model's own head,
  both moved to CPU as ``extract_features`` does (``.float().cpu()``);
- bare: ``backbone.model(x)`` (timm's forward, logits only), under ``torch.inference_mode`` as ours.

Both see the very same decoded, preprocessed batches (batch 32); each batch is run by both, in
alternating order, so background load hits both alike. The goal is ours / bare >= 0.9x. The end-to-end
``extract_features`` (decoding, DataLoader workers, cache disabled) is reported for information.

    .venv/bin/python bench/bench_features.py [--quick] [--images N] [--rounds R]
"""

from __future__ import annotations

import os
import time

import _common  # noqa: F401  (puts the repository on sys.path)
import torch
from _common import machine_info, median, parser, table

from protolib.backbones import load_backbone
from protolib.data import load_image, scan_split
from protolib.data.features import extract_features


def pick_images(backbone, data, n: int) -> list:
    """n validation images, round-robin over the classes (so every class is represented)."""
    images = scan_split(data, "val", backbone.class_names, backbone.wnids)
    lists = [images.images[c.folder] for c in images.classes]
    picked = [paths[i] for i in range(max(map(len, lists))) for paths in lists if i < len(paths)]
    return picked[:n]


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=None, help="images (default 256, quick 64)")
    p.add_argument("--rounds", type=int, default=None, help="passes over the batches (default 2, quick 1)")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    n_images = args.images or (64 if args.quick else 256)
    rounds = args.rounds or (1 if args.quick else 2)
    bs = args.batch_size

    print(f"machine: {machine_info()}")
    print(f"load average at start: {open('/proc/loadavg').read().split()[:3]}")
    backbone = load_backbone()
    paths = pick_images(backbone, args.data, n_images)
    transform = backbone.preprocessing.transform()
    pixels = torch.stack([transform(load_image(p)) for p in paths])
    batches = list(pixels.split(bs))
    print(f"{len(paths)} images preloaded as {len(batches)} batches of <= {bs}, {tuple(pixels.shape[1:])}; rounds={rounds}")

    def ours(x):
        f, z = backbone(x)
        return f.float().cpu(), z.float().cpu()

    def bare(x):
        with torch.inference_mode():
            return backbone.model(x)

    # warm-up (first-call allocations, oneDNN primitive creation) and a correctness check
    f, z = ours(batches[0])
    zb = bare(batches[0])
    print(f"features {tuple(f.shape)}, max |logits ours - bare| = {(z - zb).abs().max().item():.2e}")

    times = {"ours": [], "bare": []}  # per batch
    per_round = {"ours": [], "bare": []}  # images/s of each full pass
    ratios = []  # paired per batch: bare time / ours time = ours throughput / bare throughput
    for r in range(rounds):
        spent = {"ours": 0.0, "bare": 0.0}
        for i, x in enumerate(batches):
            order = [("ours", ours), ("bare", bare)]
            if (i + r) % 2:
                order.reverse()
            pair = {}
            for name, fn in order:
                start = time.perf_counter()
                fn(x)
                pair[name] = time.perf_counter() - start
                times[name].append(pair[name])
                spent[name] += pair[name]
            ratios.append(pair["bare"] / pair["ours"])
        for name in spent:
            per_round[name].append(len(paths) / spent[name])
        print(f"round {r + 1}/{rounds}: ours {per_round['ours'][-1]:.2f} img/s, bare {per_round['bare'][-1]:.2f} img/s", flush=True)

    rows = []
    for name, label in (
        ("bare", "bare `backbone.model(x)` (timm forward)"),
        ("ours", "ours `backbone(x)` (features + own-head logits, to CPU)"),
    ):
        best_batch = min(times[name])
        rows.append(
            [
                label,
                f"{max(per_round[name]):.2f}",
                f"{median(per_round[name]):.2f}",
                f"{bs / median(times[name]):.2f}",
                f"{1000 * best_batch:.0f}",
            ]
        )
    print()
    print(table(["path", "img/s (best pass)", "img/s (median pass)", "img/s (median batch)", "best batch ms"], rows))
    best_ratio = max(per_round["ours"]) / max(per_round["bare"])
    print()
    print(
        table(
            ["ratio ours / bare", "value"],
            [
                ["best pass / best pass", f"{best_ratio:.3f}x"],
                [f"median of {len(ratios)} paired batches", f"{median(ratios):.3f}x"],
                ["min .. max paired batch", f"{min(ratios):.3f} .. {max(ratios):.3f}"],
            ],
        )
    )

    # end to end, for information: decoding + preprocessing in DataLoader workers, no cache
    e2e = []
    for workers in (None, 0):
        start = time.perf_counter()
        feats = extract_features(backbone, paths, batch_size=bs, num_workers=workers, cache_dir=False)
        seconds = time.perf_counter() - start
        used = f"default (min(4, cpus) = {min(4, os.cpu_count() or 1)})" if workers is None else "0 (main process)"
        e2e.append([f"`extract_features`, workers {used}", len(feats.paths), f"{seconds:.1f}", f"{len(feats.paths) / seconds:.2f}"])
        if args.quick:
            break
    print()
    print(table(["end to end (cache disabled)", "images", "s", "img/s"], e2e))
    print(f"\nload average at end: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
