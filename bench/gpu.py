"""Decomposition on a GPU: the sample photos and a generated 1000-class workload on ``cuda``, exactness checked on the
same device, stage times printed.

1. the sample photos: EfficientNet-Lite0, 10 classes x 60 train photos, k = 3;
2. 1000 ImageNet classes x 4 photos (sample photos copied into 1000 class folders, as bench_stream.py does), k = 3.

Each runs ``run_decomposition`` on ``cuda`` with a fresh feature cache (float16 features, extraction under
autocast, batches fit to the GPU's free memory) and reports the time of each stage. Exactness, on the GPU:
(a) with respect to the features used: the prototype head on the cached features against the model's own head
on them (``Features.logits``), every class; (b) against the model itself: for 64 photos, the prototype head on
float32 features (no autocast) against the model's own forward on those photos. Extraction speed with and
without autocast is compared on the same photos.

    .venv/bin/python bench/gpu.py [--quick] [--device cuda]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import torch
from _common import machine_info, parser, table
from bench_stream import workload

from protolib.backbones import load_backbone
from protolib.data import load_image
from protolib.data.features import batch_size_for, extract_features, stream_features
from protolib.pipeline import run_decomposition


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def stage_clock():
    """A progress callback that charges the time since the previous report to the stage reporting now (stages
    report when a batch or a chunk of classes is done, so the times add up to the whole run)."""
    seen: dict[str, float] = {}
    last = [time.perf_counter()]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        seen[stage] = seen.get(stage, 0.0) + now - last[0]
        last[0] = now

    return progress, seen


def decompose(backbone, data: Path, per_class: int, cache: Path, label: str) -> list:
    sync()
    progress, seen = stage_clock()
    start = time.perf_counter()
    run = run_decomposition(backbone, data, images_per_class=per_class, k=3, cache_dir=cache, progress=progress)
    sync()
    total = time.perf_counter() - start
    stages = seen
    head = run.head(backbone)
    worst = 0.0
    groups = [run.manifest["images"][c["folder"]] for c in run.manifest["classes"]]
    for feats in stream_features(backbone, groups, cache_dir=cache):
        logits, _ = head(feats.feats.to(backbone.device))
        reference = feats.logits.to(backbone.device)
        worst = max(worst, float((logits - reference).abs().max()) / max(1.0, float(reference.abs().max())))
    paths = [Path(p) for g in groups for p in g][:64]
    x = torch.stack([backbone.preprocessing.transform()(load_image(p)) for p in paths]).to(backbone.device)
    with torch.inference_mode():
        feats32, _ = backbone(x)
        model = backbone.model(x).float()
    own, _ = head(feats32)
    vs_model = float((own - model).abs().max()) / max(1.0, float(model.abs().max()))
    return [
        label,
        len(run.classes),
        sum(map(len, groups)),
        f"{total:.1f}",
        *(f"{stages.get(s, 0):.2f}" for s in ("features", "nmf", "scaling", "refinement")),
        f"{worst:.1e}",
        f"{vs_model:.1e}",
    ]


def extraction_speed(backbone, paths: list[Path]) -> list[list]:
    rows = []
    for mixed in (False, True, False, True):
        sync()
        start = time.perf_counter()
        list(stream_features(backbone, [paths], cache_dir=False, mixed_precision=mixed))
        sync()
        rows.append(["autocast float16" if mixed else "float32", len(paths), f"{len(paths) / (time.perf_counter() - start):.0f}"])
    return rows


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default); cpu only to check that the script runs")
    args = p.parse_args()
    print(machine_info())
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU on this machine: nothing measured")
        sys.exit(1)
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"{torch.cuda.get_device_name(device)}, free memory {torch.cuda.mem_get_info(device)[0] / 1024**3:.1f} GiB")
    backbone = load_backbone("efficientnet_lite0", device=device)
    print(f"batch size fit to the device: {batch_size_for(backbone)}\n")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as scratch:
        scratch = Path(scratch)
        extract_features(backbone, workload(args.data, 1, 8, scratch / "warm")[0], cache_dir=False)  # CUDA start-up
        rows.append(decompose(backbone, args.data, 5 if args.quick else 60, scratch / "cache-sample", "sample photos"))
        classes = 20 if args.quick else 1000
        workload(args.data, classes, 4, scratch / "generated")
        rows.append(decompose(backbone, scratch / "generated", 4, scratch / "cache-generated", f"{classes} classes x 4"))
        speed = extraction_speed(backbone, sorted((args.data / "val").rglob("*.JPEG"))[: 16 if args.quick else 256])
    print(
        table(
            [
                "workload",
                "classes",
                "images",
                "total s",
                "features s",
                "nmf s",
                "scaling s",
                "refinement s",
                "max rel. error vs features' own logits",
                "max rel. error vs the model (float32)",
            ],
            rows,
        )
    )
    print()
    print(table(["extraction", "images", "images/s"], speed))


if __name__ == "__main__":
    main()
