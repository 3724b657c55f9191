"""Command line: ``protoscope`` (or ``python -m protolib``) ``decompose | evaluate | explain | report``, ``app``
(the browser app), ``probe`` (fit a linear probe), ``parts-benchmark`` (prototypes against ground-truth parts),
``cub-export`` and ``cub-eval`` (CUB-200-2011)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import config
from .backbones import DEFAULT_BACKBONE, BackboneError, load_backbone
from .data import DataError
from .files import atomic_path
from .method import DEFAULT_STRATEGY, STRATEGIES
from .method.discovery import DEFAULT_DISCOVERY, DISCOVERIES
from .runs import MANIFEST, RunError
from .targets import (
    EXPORT_SUFFIXES,
    FIGURE_SUFFIXES,
    check_cache,
    check_label_space,
    output_file,
    output_folder,
    run_data,
)

DATA_HELP = "DIR/train|val/<class>/<images> or DIR/<class>/<images> (default: the sample photos)"
RUN_DATA_HELP = "DIR/train|val/<class>/<images> or DIR/<class>/<images> (default: the run's own data folder)"
DOWNLOAD_HELP = "fetch the pretrained weights (checked) into the torch / Hugging Face cache if they are not there"
USER_ERRORS = (
    BackboneError,
    DataError,
    RunError,
    FileExistsError,
    FileNotFoundError,
    ValueError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


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


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1 (0 or -1 would silently mean "all" or "all but one")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give 1 or more")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--cache", default=None, help="feature cache folder (default: $PROTOLIB_CACHE or ~/.cache/protoscope)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="protoscope", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("decompose", help="find k part prototypes per class and rewrite the head exactly")
    p.add_argument("--data", default=None, help=DATA_HELP + "; with --probe: the probe's own")
    p.add_argument("--split", default="train")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="registry name or timm:<model>")
    p.add_argument("--weights", default=None, help="checkpoint file (safetensors or torch); default: pretrained")
    p.add_argument("--probe", default=None, metavar="DIR", help="a probe folder (from `probe --out`): decompose the probed model")
    p.add_argument("--download", action="store_true", help=DOWNLOAD_HELP)
    p.add_argument("--classes", nargs="+", default=None, help="class folders or names (default: all)")
    p.add_argument("--images-per-class", type=positive, default=None)
    p.add_argument("--k", type=positive, default=3, help="prototypes per class (default 3)")
    p.add_argument("--strategy", choices=STRATEGIES, default=DEFAULT_STRATEGY)
    p.add_argument(
        "--discovery",
        choices=DISCOVERIES,
        default=DEFAULT_DISCOVERY,
        help="how prototypes are found: nmf = the paper's NMF (default), evidence = evidence-weighted NMF",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--overwrite", action="store_true")
    _add_common(p)

    p = sub.add_parser("evaluate", help="exactness, accuracy and heatmap fidelity of a run")
    p.add_argument("--run", required=True)
    p.add_argument("--data", default=None, help=RUN_DATA_HELP)
    p.add_argument("--split", default="val")
    p.add_argument("--images-per-class", type=positive, default=None)
    p.add_argument("--json", default=None, help="also write every figure to this JSON file (never inside the run folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    _add_common(p)

    p = sub.add_parser("explain", help="explain one image as a PNG")
    p.add_argument("--run", required=True)
    p.add_argument("image")
    p.add_argument("--label", default=None, help="class to explain (name or index; default: predicted)")
    p.add_argument("--out", default="explanation.png", help="image file to write: .png, .jpg, .pdf or .svg")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _add_common(p)

    p = sub.add_parser("probe", help="fit a linear head on a frozen backbone's pooled features of a labelled folder")
    p.add_argument("--data", default=str(config.SAMPLE_DATA), help=DATA_HELP)
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="registry name, timm:<model>, or vgg16 / vgg19")
    p.add_argument("--weights", default=None, help="checkpoint file for the backbone; default: pretrained")
    p.add_argument("--download", action="store_true", help=DOWNLOAD_HELP)
    p.add_argument("--split", default="train")
    p.add_argument("--val-split", default="val", help="without it, every 5th training image is held out")
    p.add_argument("--images-per-class", type=positive, default=None)
    p.add_argument("--l2", type=float, default=None, help="L2 penalty on standardised features (default 1e-3)")
    p.add_argument("--out", required=True, help="probe folder to write")
    p.add_argument("--overwrite", action="store_true")
    _add_common(p)

    p = sub.add_parser("parts-benchmark", help="score prototypes against ground-truth parts (generated data)")
    p.add_argument("--out", default="runs/parts-bench", help="folder for data, model, runs and results.json")
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3, 4],
        help="one data set and model per seed; mean and 95%% interval over them (default: 0 1 2 3 4)",
    )
    p.add_argument(
        "--k-offsets",
        type=int,
        nargs="+",
        default=None,
        help="prototypes per class = its number of parts + each offset (default: 0 2)",
    )
    p.add_argument(
        "--target-accuracy",
        type=float,
        default=None,
        help="stop training at the first epoch with this val accuracy (default: 0.98)",
    )
    p.add_argument("--max-epochs", type=int, default=None, help="PartsNet training epochs at most (default: 10)")

    p = sub.add_parser(
        "shortcut-benchmark", help="repair a model that leans on the background: prototype edits against DFR (generated data)"
    )
    p.add_argument("--out", required=True, help="folder: data/ (with groups.csv and masks), seed-<s>/, shortcut.json")
    p.add_argument("--seeds", type=positive, default=3, help="models trained, seeds 0..N-1 (default 3)")
    p.add_argument(
        "--discovery",
        choices=DISCOVERIES,
        default=DEFAULT_DISCOVERY,
        help="how prototypes are found (default: nmf, the paper's NMF)",
    )

    p = sub.add_parser("cub-export", help="write CUB-200-2011 (native layout) as an image folder for the pipeline")
    p.add_argument("--cub", required=True, help="the CUB_200_2011 folder")
    p.add_argument("--out", required=True)
    p.add_argument("--no-crop", action="store_true", help="keep whole images (default: crop to the bounding box)")
    p.add_argument("--classes", nargs="+", default=None, help="class folders (default: all 200)")
    p.add_argument("--images-per-class", type=positive, default=None)
    p.add_argument("--class-map", action="store_true", help="write classes.csv for a checkpoint fine-tuned on CUB")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("cub-eval", help="ProtoEval consistency and stability of a run on CUB test images")
    p.add_argument("--run", required=True)
    p.add_argument("--cub", required=True, help="the CUB_200_2011 folder")
    p.add_argument("--images-per-class", type=positive, default=None)
    p.add_argument("--no-crop", action="store_true")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file (never inside the run folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    _add_common(p)

    p = sub.add_parser("report", help="one HTML report (and JSON beside it): exactness, Table 3, faithfulness, intervention")
    p.add_argument("--run", required=True)
    p.add_argument("--data", default=None, help=RUN_DATA_HELP)
    p.add_argument("--out", default=None, help="HTML file to write (default: <run name>-report.html here; JSON beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--split", default="val")
    p.add_argument("--images-per-class", type=positive, default=None, help="held-out images per class (default: all)")
    p.add_argument("--keypoints", default=None, help="CUB root or folder with keypoints.csv (default: --data)")
    p.add_argument("--faithfulness-images", type=positive, default=100, help="held-out images of the deletion/insertion curves")
    p.add_argument("--steps", type=positive, default=8, help="steps of each deletion/insertion curve")
    p.add_argument("--seeds", type=int, default=3, help="NMF seeds compared for stability")
    _add_common(p)
    p = sub.add_parser("app", help="open the app in the browser (streamlit run app.py)")
    p.add_argument("--data", default=None, help="the data folder the app opens on (default: the sample photos)")
    p.add_argument("streamlit_args", nargs="*", help="options for streamlit, after --, e.g. -- --server.port 8600")
    p = sub.add_parser("compare", help="2 or 3 runs side by side on the same photos of one class (a PNG and an HTML page)")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="2 or 3 run folders")
    p.add_argument(
        "--class", dest="class_name", required=True, metavar="NAME", help="a class every run decomposed (name or folder)"
    )
    p.add_argument("--data", default=None, help=RUN_DATA_HELP + " (of the first run); the held-out photos of the class")
    p.add_argument("--split", default="val")
    p.add_argument("--photos", type=positive, default=8, help="held-out photos of the class (default 8)")
    p.add_argument(
        "--maps",
        choices=("heatmaps", "coefficients"),
        default="heatmaps",
        help="what prototypes are matched on: their heatmaps f.p (default) or coefficient maps f.pinv(P)",
    )
    p.add_argument("--out", required=True, help="PNG file to write (the HTML page goes beside it)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PNG and HTML page")
    _add_common(p)
    p = sub.add_parser("export", help="a run (an edited head too) as one TorchScript file that runs without protoscope")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument(
        "--out",
        required=True,
        help="file to write: model.pt (TorchScript, torch.jit.load reads it) or model.pt2 (torch.export.load)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda: where the exported model's weights live (default: cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    # -- mistakes and their culprits, and the story page that shows them --
    for name, help_text in (
        ("mistakes", "the held-out mistakes one or two prototype switches fix, and the harmful prototypes"),
        ("story", "one offline HTML page to hand over: the model, its prototypes, its fixed mistakes"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--run", required=True)
        p.add_argument("--data", default=None, help=RUN_DATA_HELP)
        p.add_argument("--split", default="val")
        p.add_argument(
            "--json" if name == "mistakes" else "--out",
            required=True,
            help="JSON file to write" if name == "mistakes" else "HTML file to write",
        )
        p.add_argument("--overwrite", action="store_true")
        _add_common(p)
    return parser


def cmd_decompose(args) -> int:
    from .pipeline import run_decomposition
    from .runs import save_run

    out = output_folder(args.out, args.overwrite)
    if args.probe and (Path(args.probe) / MANIFEST).is_file():
        raise ValueError(f"{args.probe} is a decomposition run, not a probe: --probe takes a folder written by `probe --out`")
    name = f"probe:{args.probe}" if args.probe else args.backbone
    download_if_asked(args, name)
    backbone = load_backbone(name, args.weights, args.device)
    data = args.data or (_probe_data(backbone) if args.probe else str(config.SAMPLE_DATA))
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
        random_state=args.seed,
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


def download_if_asked(args, name: str) -> None:
    """--download: fetch the pretrained weights of ``name`` (checked, with a progress bar) when they are missing."""
    from .backbones.download import fetch_weights, needs_download, weights_file

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


def _probe_data(backbone) -> str:
    """Without --data, a probe's images are those it was fit on (its manifest records the folder)."""
    data = backbone.manifest.get("data")
    if not data or not Path(data).is_dir():
        raise ValueError(f"the probe's images are no longer at {data}: pass --data")
    return data


def _run_and_model(args):
    """The run of ``--run`` and the model it was made from, on ``--device``."""
    from .runs import load_run

    run = load_run(args.run)
    return run, run.load_backbone(args.device)


def _write_json(figures: dict, target: str | Path) -> Path:
    target = Path(target)  # checked by _output_file before the work
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(figures, indent=2))
    return target


def cmd_evaluate(args) -> int:
    from .evaluation.metrics import evaluate_run

    target = args.json and output_file(args.json, args.overwrite, "--json")
    run, backbone = _run_and_model(args)
    data = run_data(args, run)
    check_label_space(run, backbone, data, args.split)
    figures = evaluate_run(run, backbone, data, args.split, args.images_per_class, cache_dir=args.cache, progress=StageProgress())
    if target:
        _write_json(figures, target)
    for key in ("top1_original", "top1_prototype", "max_abs_logit_diff"):
        print(f"{key:<30} {figures[key]:.6g}")
    for space, scores in figures["table3"].items():
        if isinstance(scores, dict):
            print(f"{'table3.' + space:<30} " + "  ".join(f"{key} {value:.4f}" for key, value in scores.items()))
    for name, f in figures["signed_fidelity"].items():
        print(f"{'signed_fidelity.' + name:<30} mean {f['mean']:.4f}  worst {f['min']:+.4f}  flips {f['flips']}")
    print(f"-> {target}" if target else "(--json FILE keeps every figure)")
    return 0


def cmd_explain(args) -> int:
    from .explain import explain_image, explanation_figure

    out = output_file(args.out, args.overwrite)
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"--out {out}: name an image file ending in {', '.join(FIGURE_SUFFIXES)}")
    run, backbone = _run_and_model(args)
    head = run.head(backbone)
    label = None if args.label is None else _decomposed_label(args.label, backbone.labels, head)
    explanation = explain_image(backbone, head, args.image, label)
    path = explanation_figure(explanation, backbone.labels, out)
    top_label, top_p = explanation.top(1)[0]
    print(f"predicted {backbone.labels[top_label]} ({top_p:.0%}); explained {backbone.labels[explanation.label]} -> {path}")
    return 0


def _decomposed_label(text: str, labels: list[str], head) -> int:
    """A class given by index or name, which the run must have decomposed."""
    from .data.folders import ascii_number

    number = ascii_number(text)  # "²" or "٣" are not indices
    label = number if number is not None else (labels.index(text) if text in labels else None)
    decomposed = [labels[c] for c in head.classes.tolist()]
    if label is None or label >= len(labels) or label not in head.classes.tolist():
        raise ValueError(f"--label {text!r} is not a class this run decomposed; choose one of: {', '.join(decomposed)}")
    return label


def cmd_probe(args) -> int:
    from .probe import DEFAULT_L2, fit_probe

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


def cmd_parts_benchmark(args) -> int:
    from dataclasses import replace

    from .benchmarks.parts import BenchConfig, run_parts_benchmark_seeds
    from .benchmarks.parts_tables import discovery_table, headline_table

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


def cmd_shortcut_benchmark(args) -> int:
    from .benchmarks.shortcut import run_shortcut_benchmark
    from .benchmarks.shortcut_config import ShortcutConfig
    from .benchmarks.shortcut_summary import shortcut_table

    results = run_shortcut_benchmark(
        args.out, ShortcutConfig(discovery=args.discovery), args.seeds, log=lambda message: print(message, file=sys.stderr)
    )
    print(f"Protocol: {results['protocol']}\n")
    print(shortcut_table(results))
    print(f"-> {Path(args.out) / 'shortcut.json'} and {Path(args.out) / 'shortcut.md'}", file=sys.stderr)
    return 0


def cmd_cub_export(args) -> int:
    from .data.cub import export_image_folder

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


def cmd_cub_eval(args) -> int:
    from .evaluation.part_scores import cub_protoeval

    target = args.json and output_file(args.json, args.overwrite, "--json")
    run, backbone = _run_and_model(args)
    report = cub_protoeval(run, backbone, args.cub, args.images_per_class, crop=not args.no_crop, progress=StageProgress())
    if target:
        _write_json(report, target)
    for method, per_map in report["scores"].items():
        for kind, scores in per_map.items():
            figures = f"consistency {scores['consistency']:6.2f}%  stability {scores['stability']:6.2f}%"
            print(f"{method:<8} {kind:<13} {figures}")
    print(f"-> {target}" if target else "(--json FILE keeps the figures)")
    return 0


def cmd_report(args) -> int:
    from .report import ReportSettings, build_report, report_paths, write_report

    out, beside = report_paths(args.out or f"{Path(args.run).resolve().name}-report.html")
    output_file(out, args.overwrite), output_file(beside, args.overwrite)
    run, backbone = _run_and_model(args)
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


def app_script() -> Path:
    """The app's entry file (``app.py`` beside ``pages/``): in a clone, or where ``pip install`` put it."""
    import importlib.util

    spec = importlib.util.find_spec("app")  # found, not imported: importing it would draw the app
    path = Path(spec.origin) if spec and spec.origin else None
    if path is None or not (path.parent / "pages" / "common").is_dir():
        raise FileNotFoundError("the protoscope app (app.py and pages/) is not installed with this package")
    return path


def cmd_app(args) -> int:
    import subprocess

    options = list(args.streamlit_args)
    if not any(option.startswith("--server.address") for option in options):
        options += ["--server.address", "localhost"]  # a shared server is a choice: see the README
    command = [sys.executable, "-m", "streamlit", "run", str(app_script()), *options]
    if args.data:
        command += ["--", "--data", args.data]
    return subprocess.call(command)


def cmd_compare(args) -> int:
    from .evaluation.compare import MAX_RUNS
    from .evaluation.compare_figure import comparison_png
    from .report.build import comparison_report
    from .report.html import render_comparison
    from .runs import load_run

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


def cmd_export(args) -> int:
    from .backbones import resolve_device
    from .export import export_model, load_model

    out = output_file(args.out, args.overwrite)
    if out.suffix not in EXPORT_SUFFIXES:
        raise ValueError(
            f"--out {out}: name a .pt file (TorchScript) or a .pt2 file (torch.export); other formats (ONNX...) are not written"
        )
    model = load_model(args.run, resolve_device(args.device))
    out = export_model(model, out)
    named = sum(bool(name) for names in model.prototype_labels.values() for name in names)
    print(
        f"{len(model.decomposed)} classes as prototypes (k = {model.k}, {named} named), "
        f"{len(model.class_names)} logits; intervention: {model.info.get('intervention') or 'none'} -> {out}"
    )
    return 0


def cmd_mistakes(args) -> int:
    """``mistakes`` and ``story``: the culprits of the held-out mistakes, as JSON or as one offline page."""
    from .report.story import story_figures, write_story

    option = "--json" if args.command == "mistakes" else "--out"
    target = output_file(args.json if args.command == "mistakes" else args.out, args.overwrite, option)
    if args.command == "story" and target.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"--out {target}: name an .html file")
    run, backbone = _run_and_model(args)
    data = run_data(args, run)
    check_label_space(run, backbone, data, args.split)
    story = story_figures(
        run, backbone, data, args.split, cache_dir=args.cache, progress=StageProgress(), pictures=args.command == "story"
    )
    f = story.mistakes
    if args.command == "mistakes":
        _write_json(f, target)
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


COMMANDS = {
    "app": cmd_app,
    "export": cmd_export,
    "decompose": cmd_decompose,
    "evaluate": cmd_evaluate,
    "explain": cmd_explain,
    "probe": cmd_probe,
    "parts-benchmark": cmd_parts_benchmark,
    "shortcut-benchmark": cmd_shortcut_benchmark,
    "cub-export": cmd_cub_export,
    "cub-eval": cmd_cub_eval,
    "report": cmd_report,
    "compare": cmd_compare,
    "mistakes": cmd_mistakes,
    "story": cmd_mistakes,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_cache(args)
        return COMMANDS[args.command](args)
    except USER_ERRORS as exc:  # a clear message, not a traceback, for what the user can fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
