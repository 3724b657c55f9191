"""``explain`` (one image as a figure of its prototypes' evidence) and ``export`` (a run, an edited head
too, as one model file that runs without protoscope)."""

from __future__ import annotations

import argparse
import sys

from ..method.head import PrototypeHead
from ..targets import EXPORT_SUFFIXES, FIGURE_SUFFIXES, output_file
from .common import run_and_model


def cmd_explain(args: argparse.Namespace) -> int:
    from ..explain import explain_image, explanation_figure

    out = output_file(args.out, args.overwrite)
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"--out {out}: name an image file ending in {', '.join(FIGURE_SUFFIXES)}")
    run, backbone = run_and_model(args)
    head = run.head(backbone)
    label = None if args.class_name is None else _decomposed_label(args.class_name, backbone.class_names, head)
    spatial = None if args.without_edit else run.spatial_edit
    explanation = explain_image(backbone, head, args.image, label, spatial)
    if spatial:  # the run's model is the edited one: its figures depend on it (said once the photo was read)
        said = spatial.describe(backbone.class_names)
        print(f"applying the run's edit in space ({said}); --without-edit leaves it off", file=sys.stderr)
    path = explanation_figure(explanation, backbone.class_names, out)
    top_label, top_p = explanation.top(1)[0]
    print(
        f"predicted {backbone.class_names[top_label]} ({top_p:.0%}); explained {backbone.class_names[explanation.label]} -> {path}"
    )
    return 0


def _decomposed_label(text: str, class_names: list[str], head: PrototypeHead) -> int:
    """A class given by index or name, which the run must have decomposed."""
    from ..data.folders import ascii_number

    number = ascii_number(text)  # "²" or "٣" are not indices
    label = number if number is not None else (class_names.index(text) if text in class_names else None)
    decomposed = [class_names[c] for c in head.classes.tolist()]
    if label is None or label >= len(class_names) or label not in head.classes.tolist():
        raise ValueError(f"--class {text!r} is not a class this run decomposed; choose one of: {', '.join(decomposed)}")
    return label


def cmd_export(args: argparse.Namespace) -> int:
    from ..backbones import resolve_device
    from ..export import export_model, load_model

    out = output_file(args.out, args.overwrite)
    if out.suffix not in EXPORT_SUFFIXES:
        raise ValueError(
            f"--out {out}: name a .pt file (TorchScript) or a .pt2 file (torch.export); other formats (ONNX...) are not written"
        )
    model = load_model(args.run, resolve_device(args.device))
    out = export_model(model, out)
    named = sum(bool(name) for names in model.prototype_names.values() for name in names)
    print(
        f"{len(model.decomposed)} classes as prototypes (k = {model.k}, {named} named), "
        f"{len(model.class_names)} logits; intervention: {model.info.get('intervention') or 'none'} -> {out}"
    )
    return 0
