"""Command line: ``python -m protolib decompose | evaluate | explain``."""

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
            unit = "img" if stage == "features" else "class"
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
    p.add_argument("--data", required=True, help="folder with train/ and val/ class sub-folders")
    p.add_argument("--split", default="train")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="registry name or timm:<model>")
    p.add_argument("--weights", default=None, help="checkpoint file (safetensors or torch); default: pretrained")
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
    return parser


def cmd_decompose(args) -> int:
    from .pipeline import run_decomposition
    from .runs import save_run

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite or choose another --out")
    backbone = load_backbone(args.backbone, args.weights, args.device)
    if backbone.note:
        print(f"note: {backbone.note}", file=sys.stderr)
    started = time.perf_counter()
    run = run_decomposition(
        backbone,
        args.data,
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


COMMANDS = {"decompose": cmd_decompose, "evaluate": cmd_evaluate, "explain": cmd_explain}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as exc:  # a clear message, not a traceback, for what the user can fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
