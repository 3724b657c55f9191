"""The commands that read a run against held-out photos: ``evaluate`` (figures), ``report`` (one HTML page
and its JSON), ``compare`` (runs side by side), ``mistakes`` and ``story`` (the mistakes that prototype
switches fix, as JSON or as one page to hand over)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..files import atomic_path
from ..targets import check_label_space, output_file, run_data
from .common import StageProgress, run_and_model, write_json


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluation.metrics import evaluate_run

    target = args.json and output_file(args.json, args.overwrite, "--json")
    run, backbone = run_and_model(args)
    data = run_data(args, run)
    check_label_space(run, backbone, data, args.split)
    figures = evaluate_run(run, backbone, data, args.split, args.images_per_class, cache_dir=args.cache, progress=StageProgress())
    if target:
        write_json(figures, target)
    for key in ("top1_original", "top1_prototype", "max_abs_logit_diff"):
        print(f"{key:<30} {figures[key]:.6g}")
    for space, scores in figures["table3"].items():
        if isinstance(scores, dict):
            print(f"{'table3.' + space:<30} " + "  ".join(f"{key} {value:.4f}" for key, value in scores.items()))
    for name, f in figures["signed_fidelity"].items():
        print(f"{'signed_fidelity.' + name:<30} mean {f['mean']:.4f}  worst {f['min']:+.4f}  flips {f['flips']}")
    print(f"-> {target}" if target else "(--json FILE keeps every figure)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import ReportSettings, build_report, report_paths, write_report

    out, beside = report_paths(args.out or f"{Path(args.run).resolve().name}-report.html")
    output_file(out, args.overwrite), output_file(beside, args.overwrite)
    run, backbone = run_and_model(args)
    data = run_data(args, run)
    check_label_space(run, backbone, data, args.split)
    settings = ReportSettings(
        split=args.split,
        images_per_class=args.images_per_class,
        keypoints=args.keypoints,
        faithfulness_images=args.faithfulness_images,
        steps=args.steps,
        seeds=args.seeds,
    )
    started = time.perf_counter()
    report = build_report(run, backbone, data, settings, cache_dir=args.cache, progress=StageProgress())
    html_path, json_path = write_report(report, out)
    f = report.figures
    if f["axioms"].get("available"):
        print(f"completeness max error {f['axioms']['completeness']['max_error']:.2e}")
    for key, section in f.items():
        if isinstance(section, dict) and section.get("available") is False:
            print(f"{key}: not computed ({section['reason']})", file=sys.stderr)
    print(f"report in {time.perf_counter() - started:.1f}s -> {html_path} and {json_path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..evaluation.compare import MAX_RUNS
    from ..evaluation.compare_figure import comparison_png
    from ..report.build_comparison import comparison_report
    from ..report.html import render_comparison
    from ..runs import load_run

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out} must be a .png file (the HTML page goes beside it)")
    output_file(out, args.overwrite), output_file(out.with_suffix(".html"), args.overwrite)
    if not 2 <= len(args.runs) <= MAX_RUNS:
        raise ValueError(f"--runs takes 2 or {MAX_RUNS} run folders (got {len(args.runs)})")
    runs = [load_run(path) for path in args.runs]
    models = {}
    for run in runs:  # one model per (name, weights): runs of the same model share it
        key = (run.manifest["backbone"], run.manifest["fingerprint"])
        if key not in models:
            models[key] = run.load_backbone(args.device)
        run.check_backbone(models[key])
    backbones = [models[(r.manifest["backbone"], r.manifest["fingerprint"])] for r in runs]
    data = run_data(args, runs[0])
    for run, backbone in zip(runs, backbones):
        check_label_space(run, backbone, data, args.split)
    report, comparison = comparison_report(
        runs, backbones, data, args.class_name, args.split, args.photos, args.maps, cache_dir=args.cache
    )
    comparison_png(comparison, path=out)
    page = out.with_suffix(".html")
    with atomic_path(page) as tmp:
        tmp.write_text(render_comparison(report), encoding="utf-8")
    for row in comparison.match_rows():
        print(row["match"])
    worst = comparison.disagreeing(1)[0]
    print(
        f"agreement {comparison.agreement:.3f} on {len(comparison.photos)} photos of {comparison.class_name} "
        f"(least: {comparison.per_photo[worst]:.3f}, {comparison.photos[worst]})"
    )
    print(f"-> {out} and {page}")
    return 0


def cmd_mistakes(args: argparse.Namespace) -> int:
    """``mistakes`` and ``story``: the culprits of the held-out mistakes, as JSON or as one offline page."""
    from ..report.story import story_figures, write_story

    option = "--json" if args.command == "mistakes" else "--out"
    target = output_file(args.json if args.command == "mistakes" else args.out, args.overwrite, option)
    if args.command == "story" and target.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {target}: name an .html file")
    run, backbone = run_and_model(args)
    data = run_data(args, run)
    check_label_space(run, backbone, data, args.split)
    story = story_figures(
        run, backbone, data, args.split, cache_dir=args.cache, progress=StageProgress(), pictures=args.command == "story"
    )
    f = story.mistakes
    if args.command == "mistakes":
        write_json(f, target)
    else:
        write_story(story, target)
    for space in (f, f.get("run_classes")):
        if space:
            print(
                f"{space['label_space']}: {space['mistakes']} mistakes of {space['photos']}, fixed by one switch "
                f"{space['fixed_by_one']}, by two {space['fixed_by_two']}; oracle (paper) "
                f"{space['oracle_paper']['top1_after']:.3f}, (smallest) {space['oracle_smallest']['top1_after']:.3f}; "
                f"harmful edit on half 1 {space['harmful_edit']['top1_before']:.3f} -> {space['harmful_edit']['top1_after']:.3f}"
            )
    print(f"-> {target}")
    return 0
