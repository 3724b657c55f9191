"""Command line: ``python -m protolib decompose | evaluate | explain``, and ``probe`` (fit a linear probe),
``parts-benchmark`` (prototypes against ground-truth parts), ``cub-export`` and ``cub-eval`` (CUB-200-2011)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .atomic import atomic_path
from .backbones import DEFAULT_BACKBONE, BackboneError, load_backbone
from .data import DataError
from .decompose import DEFAULT_STRATEGY, STRATEGIES
from .runs import RunError

USER_ERRORS = (BackboneError, DataError, RunError, FileExistsError, FileNotFoundError, ValueError)


class StageProgress:
    """One tqdm bar per stage on stderr; quiet when stderr is not a terminal unless asked."""

    def __init__(self):
        from tqdm import tqdm

        self._tqdm, self._bars = tqdm, {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        bar = self._bars.get(stage)
        if bar is None:
            unit = {"features": "img", "report": "section"}.get(stage, "class")
            bar = self._bars[stage] = self._tqdm(total=total, desc=f"{stage:<10}", unit=unit, file=sys.stderr)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--cache", default=None, help="feature cache folder (default: $PROTOLIB_CACHE or ~/.cache/protoscope)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m protolib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("decompose", help="find k part prototypes per class and rewrite the head exactly")
    p.add_argument("--data", default=None, help="folder with train/ and val/ class sub-folders (with --run: the probe's)")
    p.add_argument("--split", default="train")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="registry name or timm:<model>")
    p.add_argument("--weights", default=None, help="checkpoint file (safetensors or torch); default: pretrained")
    p.add_argument(
        "--run", "--probe", dest="probe", default=None, metavar="PROBE_DIR",
        help="a probe folder (from `probe --out`): decompose the probed model",
    )
    p.add_argument("--classes", nargs="+", default=None, help="class folders or names (default: all)")
    p.add_argument("--images-per-class", type=int, default=None)
    p.add_argument("--k", type=int, default=3, help="prototypes per class (default 3)")
    p.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--overwrite", action="store_true")
    _add_common(p)

    p = sub.add_parser("evaluate", help="exactness, accuracy and heatmap fidelity of a run")
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--images-per-class", type=int, default=None)
    p.add_argument("--json", default=None, help="write the figures here (default: RUN/eval.json)")
    _add_common(p)

    p = sub.add_parser("explain", help="explain one image as a PNG")
    p.add_argument("--run", required=True)
    p.add_argument("image")
    p.add_argument("--label", default=None, help="class to explain (name or index; default: predicted)")
    p.add_argument("--out", default="explanation.png")
    _add_common(p)

    p = sub.add_parser("probe", help="fit a linear head on a frozen backbone's pooled features of a labelled folder")
    p.add_argument("--data", required=True, help="folder with train/<class>/ (and val/<class>/ for the accuracy)")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="registry name, timm:<model>, or vgg16 / vgg19")
    p.add_argument("--weights", default=None, help="checkpoint file for the backbone; default: pretrained")
    p.add_argument("--split", default="train")
    p.add_argument("--val-split", default="val", help="without it, every 5th training image is held out")
    p.add_argument("--images-per-class", type=int, default=None)
    p.add_argument("--l2", type=float, default=None, help="L2 penalty on standardised features (default 1e-3)")
    p.add_argument("--out", required=True, help="probe folder to write")
    p.add_argument("--overwrite", action="store_true")
    _add_common(p)

    p = sub.add_parser("parts-benchmark", help="score prototypes against ground-truth parts (generated data)")
    p.add_argument("--out", default="runs/parts-bench", help="folder for data, model, runs and results.json")
    p.add_argument("--k", type=int, default=None, help="prototypes per class (default: its number of parts)")
    p.add_argument("--epochs", type=int, default=None, help="PartsNet training epochs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="one data set and model per seed; the figures are their mean (default: 0 1 2)")

    p = sub.add_parser("cub-export", help="write CUB-200-2011 (native layout) as an image folder for the pipeline")
    p.add_argument("--cub", required=True, help="the CUB_200_2011 folder")
    p.add_argument("--out", required=True)
    p.add_argument("--no-crop", action="store_true", help="keep whole images (default: crop to the bounding box)")
    p.add_argument("--classes", nargs="+", default=None, help="class folders (default: all 200)")
    p.add_argument("--images-per-class", type=int, default=None)
    p.add_argument("--class-map", action="store_true", help="write classes.csv for a checkpoint fine-tuned on CUB")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("cub-eval", help="ProtoEval consistency and stability of a run on CUB test images")
    p.add_argument("--run", required=True)
    p.add_argument("--cub", required=True, help="the CUB_200_2011 folder")
    p.add_argument("--images-per-class", type=int, default=None)
    p.add_argument("--no-crop", action="store_true")
    p.add_argument("--json", default=None, help="write the figures here (default: RUN/cub_protoeval.json)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")

    p = sub.add_parser("report", help="one HTML report (and JSON beside it): exactness, Table 3, faithfulness, intervention")
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True, help="folder with val/<class folder>/ (the held-out images)")
    p.add_argument("--out", default=None, help="HTML file to write (default: RUN/report.html; JSON beside it)")
    p.add_argument("--split", default="val")
    p.add_argument("--images-per-class", type=int, default=None, help="held-out images per class (default: all)")
    p.add_argument("--keypoints", default=None, help="CUB root or folder with keypoints.csv (default: --data)")
    p.add_argument("--faithfulness-images", type=int, default=8, help="images of the deletion/insertion curves")
    p.add_argument("--steps", type=int, default=8, help="steps of each deletion/insertion curve")
    p.add_argument("--seeds", type=int, default=3, help="NMF seeds compared for stability")
    _add_common(p)
    return parser


def cmd_decompose(args) -> int:
    from .pipeline import run_decomposition
    from .runs import save_run

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite or choose another --out")
    if not (args.data or args.probe):
        raise ValueError("--data is required (the folder with train/<class>/<images>)")
    if args.probe and (Path(args.probe) / "manifest.json").is_file():
        raise ValueError(f"{args.probe} is a decomposition run, not a probe: --run takes a folder written by `probe --out`")
    name = f"probe:{args.probe}" if args.probe else args.backbone
    backbone = load_backbone(name, args.weights, args.device)
    data = args.data or _probe_data(backbone)
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
        seed=args.seed,
        cache_dir=args.cache,
        progress=StageProgress(),
    )
    save_run(run, out, overwrite=args.overwrite)
    for path, reason in run.manifest["problems"]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(
        f"decomposed {len(run.classes)} classes into k={run.k} prototypes ({run.strategy}) "
        f"in {time.perf_counter() - started:.1f}s -> {out}"
    )
    return 0


def _probe_data(backbone) -> str:
    """Without --data, a probe's images are those it was fit on (its manifest records the folder)."""
    data = backbone.manifest.get("data")
    if not data or not Path(data).is_dir():
        raise ValueError(f"the probe's images are no longer at {data}: pass --data")
    return data


def cmd_evaluate(args) -> int:
    from .metrics import evaluate_run
    from .runs import load_run

    run = load_run(args.run)
    backbone = run.load_backbone(args.device)
    figures = evaluate_run(
        run, backbone, args.data, args.split, args.images_per_class, cache_dir=args.cache, progress=StageProgress()
    )
    target = Path(args.json) if args.json else Path(args.run) / "eval.json"
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(figures, indent=2))
    for key in ("top1_original", "top1_prototype", "max_abs_logit_diff", "prototypes_only_top1", "residual_only_top1"):
        print(f"{key:<30} {figures[key]:.6g}")
    for name, value in figures["heatmap_fidelity"].items():
        print(f"{'heatmap_fidelity.' + name:<30} {value:.4f}")
    print(f"-> {target}")
    return 0


def cmd_explain(args) -> int:
    from .explain import explain_image, explanation_figure
    from .runs import load_run

    run = load_run(args.run)
    backbone = run.load_backbone(args.device)
    label = None
    if args.label is not None:
        label = int(args.label) if args.label.isdigit() else backbone.labels.index(args.label)
    explanation = explain_image(backbone, run.head(backbone), args.image, label)
    path = explanation_figure(explanation, backbone.labels, args.out)
    top_label, top_p = explanation.top(1)[0]
    print(f"predicted {backbone.labels[top_label]} ({top_p:.0%}); explained {backbone.labels[explanation.label]} -> {path}")
    return 0


def cmd_probe(args) -> int:
    from .probe import DEFAULT_L2, fit_probe

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite or choose another --out")
    probe = fit_probe(
        args.data, args.backbone, args.weights, args.split, args.val_split, args.images_per_class,
        l2=DEFAULT_L2 if args.l2 is None else args.l2, device=args.device, cache_dir=args.cache,
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


def cmd_parts_benchmark(args) -> int:
    from dataclasses import replace

    from .parts_benchmark import BenchConfig, run_parts_benchmark_seeds

    cfg = replace(BenchConfig(), k=args.k)
    if args.epochs is not None:
        cfg = replace(cfg, epochs=args.epochs)
    results = run_parts_benchmark_seeds(args.out, cfg, args.seeds, report=lambda message: print(message, file=sys.stderr))
    print(json.dumps(results["scores"], indent=2))
    print(f"-> {Path(args.out) / 'results.json'}", file=sys.stderr)
    return 0


def cmd_cub_export(args) -> int:
    from .cub import export_image_folder

    out = export_image_folder(
        args.cub, args.out, crop=not args.no_crop, classes=args.classes, images_per_class=args.images_per_class,
        class_map=args.class_map, overwrite=args.overwrite, progress=StageProgress(),
    )
    print(f"-> {out} (train/: the official train split, val/: the official test split)")
    return 0


def cmd_cub_eval(args) -> int:
    from .cub import cub_protoeval
    from .runs import load_run

    run = load_run(args.run)
    backbone = run.load_backbone(args.device)
    report = cub_protoeval(run, backbone, args.cub, args.images_per_class, crop=not args.no_crop,
                           progress=StageProgress())
    target = Path(args.json) if args.json else Path(args.run) / "cub_protoeval.json"
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    for method, per_map in report["scores"].items():
        for kind, scores in per_map.items():
            figures = f"consistency {scores['consistency']:6.2f}%  stability {scores['stability']:6.2f}%"
            print(f"{method:<8} {kind:<13} {figures}")
    print(f"-> {target}")
    return 0


def cmd_report(args) -> int:
    from .report import ReportSettings, build_report, report_paths, write_report
    from .runs import load_run

    out, _ = report_paths(args.out or Path(args.run) / "report.html")
    run = load_run(args.run)
    backbone = run.load_backbone(args.device)
    settings = ReportSettings(
        split=args.split, images_per_class=args.images_per_class, keypoints=args.keypoints,
        faithfulness_images=args.faithfulness_images, steps=args.steps, seeds=args.seeds,
    )
    started = time.perf_counter()
    report = build_report(run, backbone, args.data, settings, cache_dir=args.cache, progress=StageProgress())
    html_path, json_path = write_report(report, out)
    f = report.figures
    if f["axioms"].get("available"):
        print(f"completeness max error {f['axioms']['completeness']['max_error']:.2e}")
    for key, section in f.items():
        if isinstance(section, dict) and section.get("available") is False:
            print(f"{key}: not computed ({section['reason']})", file=sys.stderr)
    print(f"report in {time.perf_counter() - started:.1f}s -> {html_path} and {json_path}")
    return 0


COMMANDS = {
    "decompose": cmd_decompose,
    "evaluate": cmd_evaluate,
    "explain": cmd_explain,
    "probe": cmd_probe,
    "parts-benchmark": cmd_parts_benchmark,
    "cub-export": cmd_cub_export,
    "cub-eval": cmd_cub_eval,
    "report": cmd_report,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as exc:  # a clear message, not a traceback, for what the user can fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
