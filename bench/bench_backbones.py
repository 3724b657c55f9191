"""The EfficientNet-Lite family side by side: ImageNet top-1 on the sample's val photos, and CPU throughput.

- top-1: 1000-way, on every val photo of the sample (500: 50 per class of 10 classes), each model with
  its own preprocessing; the label of a class folder is its wnid's index in the backbone's label space
  (checked against classes.csv). The goal is top-1 >= 0.68 for Lite1 and Lite2.
- throughput: ``backbone(x)`` (spatial features and the head's logits, as every protolib path runs it) on
  preloaded, preprocessed batches of 32 val photos, under ``torch.inference_mode``; each round runs every
  model in turn, so background load hits all of them alike; images/s is the median (and best) over rounds,
  and the speed relative to Lite0 the median of the per-round ratios (the steadier figure on a busy machine).

    .venv/bin/python bench/bench_backbones.py [--quick] [--threads 2] [--rounds R] [--batches B]
"""

from __future__ import annotations

import csv
import time

import _common  # puts the repository on sys.path
import torch
from _common import machine_info, median, table
from PIL import Image

from protolib.backbones import load_backbone
from protolib.config import SAMPLE_DATA

MODELS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def val_photos(data, backbone, per_class: int | None):
    """(path, ImageNet label) of the val photos, the label from the backbone's wnids (= classes.csv)."""
    csv_index = {}
    if (data / "classes.csv").is_file():
        with open(data / "classes.csv", newline="") as f:
            csv_index = {row["wnid"]: int(row["imagenet_index"]) for row in csv.DictReader(f)}
    photos = []
    for folder in sorted(p for p in (data / "val").iterdir() if p.is_dir()):
        label = backbone.wnids.index(folder.name)
        assert csv_index.get(folder.name, label) == label, folder.name
        photos += [(p, label) for p in sorted(folder.iterdir())[:per_class]]
    return photos


def batches(backbone, photos, batch_size: int):
    transform = backbone.preprocessing.transform()
    for start in range(0, len(photos), batch_size):
        chunk = photos[start : start + batch_size]
        x = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in chunk])
        yield x, torch.tensor([label for _, label in chunk])


def main() -> None:
    p = _common.parser(__doc__.split("\n\n")[0])
    p.set_defaults(data=SAMPLE_DATA)
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=None, help="preloaded batches per model for throughput (default 4, quick 1)")
    p.add_argument("--rounds", type=int, default=None, help="throughput rounds (default 8, quick 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    per_class = 5 if args.quick else None
    n_batches = args.batches or (1 if args.quick else 4)
    rounds = args.rounds or (1 if args.quick else 8)

    print(f"machine: {machine_info()}")
    print(f"load average at start: {open('/proc/loadavg').read().split()[:3]}")
    print(f"data: {args.data}")
    models, top1, preloaded, info = {}, {}, {}, {}
    for name in MODELS:
        started = time.perf_counter()
        backbone = models[name] = load_backbone(name)
        photos = val_photos(args.data, backbone, per_class)
        correct = 0
        for x, labels in batches(backbone, photos, args.batch_size):
            correct += int((backbone(x)[1].argmax(1) == labels).sum())
        top1[name] = (correct, len(photos))
        # throughput batches: round-robin over classes, so each batch mixes them
        mixed = sorted(photos, key=lambda item: (item[0].name, item[1]))
        preloaded[name] = [x for x, _ in batches(backbone, mixed[: n_batches * args.batch_size], args.batch_size)]
        pre = backbone.preprocessing
        info[name] = (pre.crop_size, pre.resize_size, sum(t.numel() for t in backbone.model.parameters()) / 1e6)
        print(
            f"{name}: top-1 {correct}/{len(photos)} = {correct / len(photos):.3f} "
            f"({time.perf_counter() - started:.0f} s, loading and the pass included)",
            flush=True,
        )

    rates = {name: [] for name in MODELS}
    for name in MODELS:  # warm-up: one batch each
        models[name](preloaded[name][0])
    for r in range(rounds):
        for name in MODELS:
            images = sum(len(x) for x in preloaded[name])
            started = time.perf_counter()
            for x in preloaded[name]:
                models[name](x)
            rates[name].append(images / (time.perf_counter() - started))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {rates[n][-1]:.1f} img/s" for n in MODELS), flush=True)

    rows = [
        [
            name,
            f"{info[name][0]} px (resize {info[name][1]})",
            f"{info[name][2]:.2f}",
            f"{top1[name][0] / top1[name][1]:.3f} ({top1[name][0]}/{top1[name][1]})",
            f"{median(rates[name]):.1f}",
            f"{max(rates[name]):.1f}",
            f"{median([a / b for a, b in zip(rates[name], rates[MODELS[0]])]):.2f}x",
        ]
        for name in MODELS
    ]
    print(
        f"\ntorch threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"{n_batches} batches x {rounds} rounds per model; load average at end: {open('/proc/loadavg').read().split()[:3]}"
    )
    header = ["backbone", "input", "params (M)", "top-1 (val, 1000-way)", "median img/s", "best img/s", "vs Lite0"]
    print(table(header, rows))
    for name in ("efficientnet_lite1", "efficientnet_lite2"):
        correct, total = top1[name]
        if total == 500:
            print(
                f"{name}: top-1 {correct / total:.3f} {'>=' if correct / total >= 0.68 else '<'} 0.68 "
                f"({'met' if correct / total >= 0.68 else 'NOT met'})"
            )


if __name__ == "__main__":
    main()
