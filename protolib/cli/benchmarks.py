"""The benchmarks and their data: ``parts-benchmark`` and ``shortcut-benchmark`` (generated data with ground
truth), ``cub-export`` and ``cub-eval`` (CUB-200-2011 as an image folder, and ProtoEval on it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..targets import output_file
from .common import StageProgress, run_and_model, write_json


def cmd_parts_benchmark(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..benchmarks.parts import BenchConfig, run_parts_benchmark_seeds
    from ..benchmarks.parts_tables import discovery_table, headline_table

    cfg = BenchConfig()
    if args.k_offsets is not None:
        cfg = replace(cfg, k_offsets=tuple(args.k_offsets))
    if args.target_accuracy is not None:
        cfg = replace(cfg, target_val_accuracy=args.target_accuracy)
    if args.max_epochs is not None:
        cfg = replace(cfg, max_epochs=args.max_epochs)
    results = run_parts_benchmark_seeds(args.out, cfg, args.seeds, log=lambda message: print(message, file=sys.stderr))
    print(f"Protocol: {results['protocol']}\n")
    print(headline_table(results))
    print(f"\n{discovery_table(results)}")
    print(f"-> {Path(args.out) / 'results.json'}", file=sys.stderr)
    return 0


def cmd_shortcut_benchmark(args: argparse.Namespace) -> int:
    from ..benchmarks.shortcut import run_shortcut_benchmark
    from ..benchmarks.shortcut_config import ShortcutConfig
    from ..benchmarks.shortcut_summary import shortcut_table

    results = run_shortcut_benchmark(
        args.out, ShortcutConfig(discovery=args.discovery), args.seeds, log=lambda message: print(message, file=sys.stderr)
    )
    print(f"Protocol: {results['protocol']}\n")
    print(shortcut_table(results))
    print(f"-> {Path(args.out) / 'shortcut.json'} and {Path(args.out) / 'shortcut.md'}", file=sys.stderr)
    return 0


def cmd_cub_export(args: argparse.Namespace) -> int:
    from ..data.cub import export_image_folder

    out = export_image_folder(
        args.cub,
        args.out,
        crop=not args.no_crop,
        classes=args.classes,
        images_per_class=args.images_per_class,
        class_map=args.class_map,
        overwrite=args.overwrite,
        progress=StageProgress(),
    )
    print(f"-> {out} (train/: the official train split, val/: the official test split)")
    return 0


def cmd_cub_eval(args: argparse.Namespace) -> int:
    from ..evaluation.part_scores import cub_protoeval

    target = args.json and output_file(args.json, args.overwrite, "--json")
    run, backbone = run_and_model(args)
    report = cub_protoeval(run, backbone, args.cub, args.images_per_class, crop=not args.no_crop, progress=StageProgress())
    if target:
        write_json(report, target)
    for method, per_map in report["scores"].items():
        for kind, scores in per_map.items():
            figures = f"consistency {scores['consistency']:6.2f}%  stability {scores['stability']:6.2f}%"
            print(f"{method:<8} {kind:<13} {figures}")
    print(f"-> {target}" if target else "(--json FILE keeps the figures)")
    return 0
