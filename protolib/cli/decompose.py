"""``decompose`` (a model's head into part prototypes, saved as a run) and ``probe`` (a linear head fitted
on a frozen backbone, for models whose own head is not linear), with the ``--download`` both offer."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import config
from ..backbones import load_backbone
from ..backbones.probe_models import ProbeBackbone
from ..runs.schema import MANIFEST
from ..targets import output_folder
from .common import StageProgress


def cmd_decompose(args: argparse.Namespace) -> int:
    from ..pipeline import run_decomposition
    from ..runs import save_run

    out = output_folder(args.out, args.overwrite)
    if args.probe and (Path(args.probe) / MANIFEST).is_file():
        raise ValueError(f"{args.probe} is a decomposition run, not a probe: --probe takes a folder written by `probe --out`")
    name = f"probe:{args.probe}" if args.probe else args.backbone
    download_if_asked(args, name)
    backbone = load_backbone(name, args.weights, args.device)
    data = args.data or (_probe_data(backbone) if args.probe and isinstance(backbone, ProbeBackbone) else str(config.SAMPLE_DATA))
    if backbone.note:
        print(f"note: {backbone.note}", file=sys.stderr)
    started = time.perf_counter()
    run = run_decomposition(
        backbone,
        data,
        split=args.split,
        classes=args.classes,
        images_per_class=args.images_per_class,
        k=args.k,
        strategy=args.strategy,
        random_state=args.random_state,
        cache_dir=args.cache,
        progress=StageProgress(),
        discovery=args.discovery,
    )
    save_run(run, out, overwrite=args.overwrite)
    for path, reason in run.manifest["problems"]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(
        f"decomposed {len(run.classes)} classes into k={run.k} prototypes ({run.strategy}) "
        f"in {time.perf_counter() - started:.1f}s -> {out}"
    )
    return 0


def download_if_asked(args: argparse.Namespace, name: str) -> None:
    """--download: fetch the pretrained weights of ``name`` (checked, with a progress bar) when they are missing."""
    from ..backbones.download import fetch_weights, needs_download, weights_file

    if not args.download or args.weights or not needs_download(name):
        return
    from tqdm import tqdm

    source = weights_file(name)
    print(f"downloading {source.url} -> {source.dest}", file=sys.stderr)
    with tqdm(unit="B", unit_scale=True, desc="weights", file=sys.stderr) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total or None
            bar.update(done - bar.n)

        path = fetch_weights(name, progress)
    print(f"checked and saved {path}", file=sys.stderr)


def _probe_data(backbone: ProbeBackbone) -> str:
    """Without --data, a probe's images are those it was fit on (its manifest records the folder)."""
    data = backbone.manifest.get("data")
    if not data or not Path(data).is_dir():
        raise ValueError(f"the probe's images are no longer at {data}: pass --data")
    return data


def cmd_probe(args: argparse.Namespace) -> int:
    from ..probe import DEFAULT_L2, fit_probe

    out = output_folder(args.out, args.overwrite)
    download_if_asked(args, args.backbone)
    probe = fit_probe(
        args.data,
        args.backbone,
        args.weights,
        args.split,
        args.val_split,
        args.images_per_class,
        l2=DEFAULT_L2 if args.l2 is None else args.l2,
        device=args.device,
        cache_dir=args.cache,
        progress=StageProgress(),
    )
    probe.save(out, overwrite=args.overwrite, cache_dir=args.cache)
    m = probe.manifest
    for path, reason in m["problems"]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(
        f"probe on {m['backbone']}: {len(m['classes'])} classes, {m['n_train']} training images, "
        f"val accuracy {m['val_accuracy']:.4f} ({m['validation']}, {m['n_val']} images) -> {out}\n"
        f"next: python -m protolib decompose --probe {out} --data {args.data} --out <run folder>"
    )
    return 0
