"""The feature cache on disk: one safetensors file per list of images, features in float16, a size limit
(``$PROTOLIB_CACHE_LIMIT_MB``) kept by removing the least recently used entries.

Half precision halves the disk (1000 classes x 4 photos of EfficientNet-Lite0: about 500 MB instead of 1 GB).
The logits stored beside the features are the model's own head applied to the *stored* (float16-rounded)
features, so a decomposition fit on them is exact with respect to the features it used, whether they came
from the cache or not. An entry's last use is its modification time: a read touches it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .. import config
from ..files import atomic_path

SUFFIX = ".safetensors"
STORED = torch.float16


def entry_path(folder: Path, key: str) -> Path:
    return Path(folder) / f"{key}{SUFFIX}"


def write_entry(path: Path, feats: torch.Tensor, logits: torch.Tensor, meta: dict[str, str], limit: int | None = None) -> None:
    """Write one entry atomically (features as float16), then trim the cache to ``limit`` bytes
    (default ``$PROTOLIB_CACHE_LIMIT_MB``), the new entry last."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"feats": feats.to(STORED).contiguous(), "logits": logits.float().contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    trim(path.parent, config.cache_limit_bytes() if limit is None else limit, keep=path)


def read_entry(path: Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]] | None:
    """(features as float32, logits, metadata), or None when the entry is absent or unreadable; a read marks it used."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            feats, logits = f.get_tensor("feats"), f.get_tensor("logits")
        os.utime(path)  # least recently used = oldest modification time
    except Exception:  # absent, damaged, or removed by another process meanwhile: recomputed
        return None
    return feats.float(), logits, meta


def entries(folder: Path) -> list[tuple[float, int, Path]]:
    """(last use, bytes, path) of every entry, oldest first."""
    found = []
    for path in Path(folder).glob(f"*{SUFFIX}"):
        try:
            stat = path.stat()
        except OSError:  # removed meanwhile
            continue
        found.append((stat.st_mtime, stat.st_size, path))
    return sorted(found)


def usage(folder: Path | None = None) -> tuple[int, int]:
    """(entries, bytes) of the cache folder (default ``$PROTOLIB_CACHE``)."""
    found = entries(folder or config.cache_dir())
    return len(found), sum(size for _, size, _ in found)


def trim(folder: Path, limit: int, keep: Path | None = None) -> int:
    """Remove least recently used entries until the folder holds at most ``limit`` bytes; ``keep`` goes last
    (an entry larger than the whole limit is not kept). The number removed."""
    found = entries(folder)
    found.sort(key=lambda e: (e[2] == keep, e[0]))
    total, removed = sum(size for _, size, _ in found), 0
    for _, size, path in found:
        if total <= limit:
            break
        path.unlink(missing_ok=True)
        total, removed = total - size, removed + 1
    return removed


def clear(folder: Path | None = None) -> int:
    """Remove every entry of the cache folder (nothing else in it); the number removed."""
    found = entries(folder or config.cache_dir())
    for _, _, path in found:
        path.unlink(missing_ok=True)
    return len(found)


def paths_meta(paths: list[str], problems: list[tuple[str, str]]) -> dict[str, str]:
    return {"paths": json.dumps(paths), "problems": json.dumps([list(p) for p in problems])}
