"""Shared helpers of the benchmarks: repo import path, data location, feature cache, machine info, timing."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the scripts run as `.venv/bin/python bench/bench_X.py`
    sys.path.insert(0, str(REPO))

from protolib.config import SAMPLE_DATA as DEFAULT_DATA  # noqa: E402  (after the path set-up above)

#: features are extracted once and reused by every benchmark run (the cache key covers weights and files)
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "protoscope-bench-features"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a smaller, faster run (smoke test)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="image folder with train/ and val/")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="feature cache directory")
    return p


def machine_info() -> str:
    import torch

    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info())
    except Exception:  # threadpoolctl ships with scikit-learn; without it, just say so
        blas = "n/a"
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"nproc={os.cpu_count()} ({cpu}), python {platform.python_version()}, torch {torch.__version__}, "
        f"torch threads={torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
        f"native thread pools: {blas}, cuda={'yes' if torch.cuda.is_available() else 'no'}"
    )


def load_features(backbone, data: Path, split: str, images_per_class: int | None, cache: Path):
    """Per class folder: the cached (or freshly extracted and cached) Features, and their label."""
    from protolib.data import scan_split
    from protolib.data.features import extract_features

    images = scan_split(data, split, backbone.class_names, backbone.wnids, limit=images_per_class)
    out = []
    for cls in images.classes:
        out.append((cls, extract_features(backbone, images.images[cls.folder], cache_dir=cache)))
    return out


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
