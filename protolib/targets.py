"""What a command reads and writes, checked before any work: its output files and folders (never a link, a
device, a folder of someone's, an existing file without ``--overwrite``, nor anything inside a run folder), the
feature cache, and the photos of a run (its own data folder unless ``--data`` says otherwise, and only photos
of classes the run decomposed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import config
from .backbones import Backbone
from .data import DataError
from .files import check_target, recover_swap
from .runs import Run
from .runs.names import run_folder_above

#: the formats ``explain --out`` and ``export --out`` write
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")
EXPORT_SUFFIXES = (".pt", ".pt2")


def output_folder(path: str, overwrite: bool) -> Path:
    """A folder ``--out`` checked before any work: a save interrupted earlier is recovered first (so an old
    run that seemed gone is found), a symbolic link or a file is refused, an existing folder needs ``--overwrite``."""
    out = Path(path)
    recover_swap(out)
    if out.is_symlink():
        raise ValueError(f"--out {out} is a symbolic link: it is never written, even with --overwrite")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is not a folder: it is never replaced, even with --overwrite")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite or choose another --out")
    return out


def output_file(path: str | Path, overwrite: bool, option: str = "--out") -> Path:
    """An output file checked before any work: not a link, a folder or a device (whatever the flags), not an
    existing file without ``--overwrite``, and never inside a run folder (only ``save_run`` writes there)."""
    target = check_target(path, overwrite, option)
    inside = run_folder_above(target)
    if inside is not None:
        raise ValueError(
            f"{option} {target} is inside the run folder {inside}: only a save of the run writes there; choose a file outside it"
        )
    return target


def run_data(args: argparse.Namespace, run: Run) -> str:
    """``--data``, or the run's own data folder as its manifest records it (a probe's run: the probe's), said
    on stderr; refused when it is gone."""
    if args.data:
        return args.data
    data = run.manifest.get("data")
    if not data or not Path(data).is_dir():
        raise ValueError(f"the run's data folder {data!r} is no longer there: pass --data")
    print(f"data: {data} (the run's own; --data to choose another), split {args.split}", file=sys.stderr)
    return data


def check_label_space(run: Run, backbone: Backbone, data: str, split: str) -> None:
    """Refuse photos that are not the run's (``label_space_problem``) before any backbone time is spent."""
    from .evaluation.metrics import label_space_problem

    problem = label_space_problem(run, backbone, data, split)
    if problem:
        raise DataError(problem.replace("use the data folder", "pass the --data"))


def check_cache(args: argparse.Namespace) -> None:
    """The feature cache, checked before any work and named in the message (``~nosuchuser/x``, ``/dev/null``)."""
    if "cache" in vars(args):
        if args.cache:
            config.check_folder_setting(args.cache, "--cache")
        else:
            config.check_folder_setting(config.cache_dir(), f"the feature cache (${config.CACHE_ENV})")
