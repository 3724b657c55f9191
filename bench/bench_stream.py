"""Feature extraction for many classes: one stream of images for all classes against a loader per class.

- per class (the path before the stream): a DataLoader per class, batch 32 and workers as that path chose them
  (``min(4, cores)`` from 64 photos up, else none): ``extract_features(..., batch_size=32, num_workers=...)``;
- stream: ``stream_features`` over every class at once: one DataLoader for all (batch and workers fit to the
  device: ``batch_size_for``, ``workers_for``), the features split per class afterwards.

Same backbone, same photos, cache disabled on both sides (float32 features), run side by side in one process,
alternating which goes first per round. The features of every class are compared: bytewise where both paths
ran the class in batches of the same make-up; otherwise the CPU's convolution kernels, which block the work by
batch size, can round differently, and the script stops if any feature differs by more than 1e-5 of the largest.
Workloads: 1000 classes x 4 photos (a folder of 1000 ImageNet class folders,
each holding 4 sample photos copied there: real photos, relabelled) and 10 classes x 60 photos (the sample's
own train photos).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_stream.py [--quick] [--rounds R] [--workloads 1000x4 10x60]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import torch
from _common import machine_info, parser, table

from protolib.backbones import load_backbone
from protolib.backbones.base import imagenet_class_names
from protolib.data import scan_split
from protolib.data.features import extract_features, stream_features


def workload(data: Path, classes: int, per_class: int, scratch: Path) -> list[list[Path]]:
    """Per class, its photos: the sample's own classes when they suffice, else ImageNet class folders filled
    with copies of the sample photos (each class its own files, so nothing is shared between classes)."""
    if classes <= 10:
        _, wnids = imagenet_class_names()
        names, _ = imagenet_class_names()
        images = scan_split(data, "train", names, wnids, limit=per_class)
        return [images.images[c.folder] for c in images.classes[:classes]]
    photos = sorted(p for split in ("train", "val") for p in (data / split).rglob("*") if p.is_file())
    _, wnids = imagenet_class_names()
    groups = []
    for i, wnid in enumerate(wnids[:classes]):
        folder = scratch / "train" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        group = []
        for j in range(per_class):
            source = photos[(i * per_class + j) % len(photos)]
            target = folder / f"{j}{source.suffix}"
            if not target.exists():
                shutil.copyfile(source, target)
            group.append(target)
        groups.append(group)
    return groups


def per_class(backbone, groups):
    old_workers = min(4, os.cpu_count() or 1)
    return [
        extract_features(backbone, g, batch_size=32, num_workers=old_workers if len(g) >= 64 else 0, cache_dir=False)
        for g in groups
    ]


def per_class_small_batches(backbone, groups):
    """A loader per class at the stream's batch size: what the single loader itself brings, apart from the batch."""
    return [extract_features(backbone, g, num_workers=0, cache_dir=False) for g in groups]


def streamed(backbone, groups):
    return list(stream_features(backbone, groups, cache_dir=False))


def difference(a, b) -> tuple[int, float]:
    """(classes whose features are bytewise equal, the largest |difference| relative to the largest feature)."""
    assert [r.paths for r in a] == [r.paths for r in b]
    equal = sum(torch.equal(x.feats, y.feats) for x, y in zip(a, b))
    worst = max(float((x.feats - y.feats).abs().max()) / max(float(x.feats.abs().max()), 1e-30) for x, y in zip(a, b))
    return equal, worst


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=1, help="side-by-side rounds per workload (default 1)")
    p.add_argument("--workloads", nargs="+", default=None, help="CLASSESxPHOTOS (default: 1000x4 10x60)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument(
        "--same-batch",
        action="store_true",
        help="also a loader per class at the stream's batch size (what the single loader brings by itself)",
    )
    args = p.parse_args()
    workloads = args.workloads or (["50x4", "5x20"] if args.quick else ["1000x4", "10x60"])
    backbone = load_backbone(args.backbone)
    print(
        f"{machine_info()}\nOMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, backbone {args.backbone}, "
        f"cpu count {os.cpu_count()}, load average at start {os.getloadavg()[0]:.1f}\n"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as scratch:
        for spec in workloads:
            classes, photos = (int(x) for x in spec.split("x"))
            groups = workload(args.data, classes, photos, Path(scratch) / spec)
            n = sum(map(len, groups))
            times = {"per class": [], "stream": [], "per class, stream's batch": []}
            for r in range(args.rounds):
                order = [("per class", per_class), ("stream", streamed)]
                order += [("per class, stream's batch", per_class_small_batches)] if args.same_batch else []
                reference = None
                for name, fn in order if r % 2 == 0 else order[::-1]:
                    start = time.perf_counter()
                    result = fn(backbone, groups)
                    times[name].append(time.perf_counter() - start)
                    if reference is None:
                        reference = result
                    else:
                        equal, worst = difference(reference, result)
                        assert worst <= 1e-5, f"{spec}: the features differ between the paths ({worst:.2g})"
                    del result
                    print(f"{spec} round {r}: {name} {times[name][-1]:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
            old, new = min(times["per class"]), min(times["stream"])
            rows.append(
                [
                    f"{classes} x {photos}",
                    n,
                    f"{old:.1f}",
                    f"{new:.1f}",
                    f"{n / old:.1f}",
                    f"{n / new:.1f}",
                    f"{old / new:.2f}x",
                    f"{equal} of {len(groups)} classes; max rel. diff {worst:.1g}",
                ]
            )
            if args.same_batch:
                same = min(times["per class, stream's batch"])
                rows[-1][-1] += f"; a loader per class at the stream's batch: {same:.1f} s ({same / new:.2f}x the stream's time)"
    print()
    print(
        table(
            [
                "workload",
                "images",
                "per class s",
                "stream s",
                "per class img/s",
                "stream img/s",
                "stream speed-up",
                "features bytewise equal (else: difference)",
            ],
            rows,
        )
    )
    print(f"\ntorch threads {torch.get_num_threads()}; load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
