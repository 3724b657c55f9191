"""The feature cache under a size limit: 1000 ImageNet classes x 4 photos decomposed with
``PROTOLIB_CACHE_LIMIT_MB=500`` (sample photos copied into 1000 class folders, as bench_stream.py does).

Reports the cache's size and entries after the run (it must stay under the limit), the time, and exactness with
respect to the features used: for every class whose entry is still in the cache, the prototype head on the
stored (float16) features against the model's own head on them (``Features.logits``).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_cache.py [--quick] [--limit-mb 500]
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import machine_info, parser, table
from bench_stream import workload

from protolib.backbones import load_backbone
from protolib.data import feature_cache
from protolib.data.features import cache_key, extract_features
from protolib.pipeline import run_decomposition


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--limit-mb", type=float, default=500)
    p.add_argument("--classes", type=int, default=None, help="default 1000 (quick: 50)")
    args = p.parse_args()
    classes = args.classes or (50 if args.quick else 1000)
    limit = args.limit_mb if not args.quick else args.limit_mb * classes / 1000
    os.environ["PROTOLIB_CACHE_LIMIT_MB"] = str(limit)
    print(
        f"{machine_info()}\nOMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, limit {limit:g} MB, "
        f"load average at start {os.getloadavg()[0]:.1f}\n"
    )
    backbone = load_backbone("efficientnet_lite0")
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as scratch:
        scratch = Path(scratch)
        groups = workload(args.data, classes, 4, scratch / "data")
        cache = scratch / "cache"
        start = time.perf_counter()
        run = run_decomposition(backbone, scratch / "data", images_per_class=4, k=3, cache_dir=cache)
        seconds = time.perf_counter() - start
        entries, size = feature_cache.usage(cache)
        head, worst, checked = run.head(backbone), 0.0, 0
        for group in groups:
            if feature_cache.entry_path(cache, cache_key(backbone, group)).is_file():
                feats = extract_features(backbone, group, cache_dir=cache)  # a cache hit
                logits, _ = head(feats.feats)
                worst = max(worst, float((logits - feats.logits).abs().max()) / max(1.0, float(feats.logits.abs().max())))
                checked += 1
        print(
            table(
                [
                    "classes x photos",
                    "limit MB",
                    "cache MB after the run",
                    "entries kept",
                    "run s",
                    "classes checked",
                    "max rel. |logit difference|",
                ],
                [
                    [
                        f"{len(run.classes)} x 4",
                        f"{limit:g}",
                        f"{size / 1024**2:.1f}",
                        f"{entries} of {classes}",
                        f"{seconds:.0f}",
                        checked,
                        f"{worst:.1e}",
                    ]
                ],
            )
        )
    assert size <= limit * 1024**2, "the cache outgrew its limit"
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
