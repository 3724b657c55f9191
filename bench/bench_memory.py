"""Peak memory of a decomposition (10 classes x 60 images, k=3) from cached features.

Each measurement runs in a fresh Python process that reports its own RSS high-water mark, both as
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` and as ``VmHWM`` from /proc/self/status (the two
agree when the parent that spawns the children is small, which is why this parent never imports
torch). Measurements:

- imports: torch + protolib imported and the backbone loaded;
- baseline: the same, plus the cached features of the classes loaded (what the decomposition reads)
  and read once, so that they are resident (safetensors maps the file: unread pages cost no RSS);
- nmf only: baseline, plus ``batched_nmf`` on the feature matrices (step 1 alone);
- decomposition: ``run_decomposition(backbone, data, images_per_class=60, k=3, cache_dir=...)``
  (NMF, scaling, and every refinement strategy) from the same cache.

    .venv/bin/python bench/bench_memory.py [--quick] [--repeats N]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import parser, table

MODES = ("imports", "baseline", "nmf", "decomposition")
LABELS = {
    "imports": "imports + backbone",
    "baseline": "baseline: + load (and read) cached features",
    "nmf": "baseline + batched_nmf (step 1 only)",
    "decomposition": "run_decomposition (all steps)",
}


def status_mib(field: str) -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":")) / 1024


def peak_mib() -> tuple[float, float, float]:
    """(ru_maxrss, VmHWM, VmRSS now) in MiB."""
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return maxrss, status_mib("VmHWM"), status_mib("VmRSS")


def child(mode: str, data: Path, cache: Path, classes: int, images_per_class: int, k: int) -> None:
    import torch

    from protolib.backbones import load_backbone
    from protolib.data import scan_split
    from protolib.data.features import extract_features
    from protolib.method import feature_matrix
    from protolib.method.nmf import batched_nmf
    from protolib.pipeline import run_decomposition

    after_imports = status_mib("VmHWM")
    backbone = load_backbone()
    images = scan_split(data, "train", backbone.class_names, backbone.wnids, limit=images_per_class)
    folders = [c.folder for c in images.classes][:classes]
    info = {
        "mode": mode,
        "torch_threads": torch.get_num_threads(),
        "hwm_after_imports_mib": after_imports,
        "hwm_after_backbone_mib": status_mib("VmHWM"),
        "rss_after_backbone_mib": status_mib("VmRSS"),
    }
    if mode in ("baseline", "nmf", "warm"):
        feats = [extract_features(backbone, images.images[f], cache_dir=cache) for f in folders]
        info["features_mib"] = sum(f.feats.numel() * 4 for f in feats) / 2**20
        info["rss_before_touch_mib"] = status_mib("VmRSS")
        info["checksum"] = sum(float(f.feats.sum()) for f in feats)  # reads every page: now resident
        if mode == "nmf":
            batched_nmf([feature_matrix(f.feats) for f in feats], k)
    elif mode == "decomposition":
        run = run_decomposition(backbone, data, classes=folders, images_per_class=images_per_class, k=k, cache_dir=cache)
        info["classes_decomposed"] = len(run.classes)
    info["ru_maxrss_mib"], info["vmhwm_mib"], info["vmrss_mib"] = peak_mib()
    print("RESULT " + json.dumps(info))


def measure(mode: str, args, classes: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--data",
        str(args.data),
        "--cache",
        str(args.cache),
        "--classes",
        str(classes),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"{mode} child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None, help="fresh processes per measurement (default 2, quick 1)")
    p.add_argument("--classes", type=int, default=None, help="classes (default 10, quick 3)")
    p.add_argument("--child", choices=(*MODES, "warm"), help="internal: run one measurement in this process")
    args = p.parse_args()
    classes = args.classes or (3 if args.quick else 10)
    if args.child:
        child(args.child, args.data, args.cache, classes, images_per_class=60, k=3)
        return
    repeats = args.repeats or (1 if args.quick else 2)
    print(f"parent: nproc={os.cpu_count()}, python {sys.version.split()[0]} (torch not imported here)")
    print(f"load average at start: {open('/proc/loadavg').read().split()[:3]}")
    warm = measure("warm", args, classes)  # fills the feature cache if needed; not a measurement
    print(
        f"{classes} classes x 60 images, k=3; features in cache: {warm['features_mib']:.0f} MiB of float32; "
        f"torch threads in children: {warm['torch_threads']}; {repeats} fresh process(es) per row"
    )
    results = {mode: [] for mode in MODES}
    for _ in range(repeats):
        for mode in MODES:
            results[mode].append(measure(mode, args, classes))
    peaks = {mode: statistics.median(r["vmhwm_mib"] for r in results[mode]) for mode in MODES}
    rows = []
    for mode in MODES:
        maxrss = statistics.median(r["ru_maxrss_mib"] for r in results[mode])
        spread = max(r["vmhwm_mib"] for r in results[mode]) - min(r["vmhwm_mib"] for r in results[mode])
        rss = statistics.median(r["vmrss_mib"] for r in results[mode])
        rows.append(
            [
                LABELS[mode],
                f"{peaks[mode]:.0f}",
                f"{maxrss:.0f}",
                f"{spread:.0f}",
                f"{rss:.0f}",
                f"{peaks[mode] - peaks['baseline']:+.0f}" if mode != "imports" else "",
                f"{peaks[mode] - peaks['imports']:+.0f}",
            ]
        )
    print()
    print(
        table(
            [
                "process",
                "peak RSS MiB (VmHWM, median)",
                "ru_maxrss MiB (median)",
                "spread MiB",
                "RSS at end MiB",
                "increment over baseline MiB",
                "over imports MiB",
            ],
            rows,
        )
    )
    base = results["baseline"][0]
    print(
        f"\nbaseline: RSS {base['rss_after_backbone_mib']:.0f} MiB after the backbone, "
        f"{base['rss_before_touch_mib']:.0f} MiB after loading the cached features, "
        f"{base['vmrss_mib']:.0f} MiB after reading them once"
    )
    first = results["imports"][0]
    print(
        f"in the imports process: peak {first['hwm_after_imports_mib']:.0f} MiB after `import torch, protolib` "
        f"(before the backbone), {first['hwm_after_backbone_mib']:.0f} MiB after `load_backbone()`, "
        f"RSS then {first['rss_after_backbone_mib']:.0f} MiB"
    )
    print(f"load average at end: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
