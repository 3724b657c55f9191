"""Command line: ``protoscope`` (or ``python -m protolib``) followed by a command.

Make a run: ``decompose`` (a model's head into part prototypes), ``probe`` (a linear head to decompose, for
models whose own head is not linear). Read a run: ``evaluate``, ``report`` (one HTML page), ``compare`` (2 or 3
runs side by side), ``mistakes`` and ``story`` (the mistakes prototype switches fix), ``explain`` (one image),
``export`` (one model file). Benchmarks: ``parts-benchmark``, ``shortcut-benchmark``, ``cub-export`` and
``cub-eval`` (CUB-200-2011). ``app``: the browser app."""

from __future__ import annotations

import argparse
import sys

from .. import config
from ..backbones import DEFAULT_BACKBONE, BackboneError
from ..data import DataError
from ..method import DEFAULT_STRATEGY, STRATEGIES
from ..method.discovery import DEFAULT_DISCOVERY, DISCOVERIES
from ..runs import RunError
from ..targets import check_cache
from .app import cmd_app
from .benchmarks import cmd_cub_eval, cmd_cub_export, cmd_parts_benchmark, cmd_shortcut_benchmark
from .decompose import cmd_decompose, cmd_probe
from .evaluate import cmd_compare, cmd_evaluate, cmd_mistakes, cmd_report
from .export import cmd_explain, cmd_export

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
        help="how prototypes are found: nmf = the paper's NMF (default), evidence = evidence-weighted NMF, "
        "unit-evidence = evidence-weighted NMF of unit-length cells, part maps read with damped loudness",
    )
    p.add_argument("--random-state", type=int, default=0, help="seed of the NMF initialisation (default 0)")
    p.add_argument("--seed", dest="random_state", type=int, help=argparse.SUPPRESS)  # its old name, still accepted
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
    p.add_argument("--class", dest="class_name", metavar="NAME", help="class to explain (name or class label; default: predicted)")
    p.add_argument("--label", dest="class_name", help=argparse.SUPPRESS)  # its old name, still accepted
    p.add_argument("--out", default="explanation.png", help="image file to write: .png, .jpg, .pdf or .svg")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--without-edit", action="store_true", help="explain the model without the run's edit in space")
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
