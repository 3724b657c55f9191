"""What several pages show and preselect, computed without Streamlit: defaults, the skipped-files table, and
the prototype cards and galleries (Prototypes, and the prototype table on Intervene). The runs and probes
tables are in ``run_views.py``, Evaluate's figures in ``evaluation_views.py``, Intervene's rows in
``edit_views.py``, Compare's in ``compare_views.py``.

Plain Python on tensors and dicts, so it is tested without a browser; the pages only lay it out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from protolib import config
from protolib.data import Problem
from protolib.evaluation.compare import contribution_shares
from protolib.evaluation.prototype_health import ClassHealth

GALLERY_PAGE_SIZE = 24


# -- defaults ------------------------------------------------------------------------------------
def cli_data_arg(argv: Sequence[str]) -> str | None:
    """``--data DIR`` or ``--data=DIR`` from the script's arguments (``streamlit run app.py -- --data DIR``)."""
    for i, arg in enumerate(argv):
        if arg == "--data" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--data="):
            return arg.split("=", 1)[1]
    return None


def default_data_dir(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Path | None:
    """The first data folder that exists of ``--data``, ``$PROTOLIB_DATA`` and the sample photos."""
    environ = os.environ if environ is None else environ
    given = cli_data_arg(argv)
    candidates = [Path(given).expanduser() if given else None, config.data_dir_from_env(environ), config.SAMPLE_DATA]
    return next((p for p in candidates if p is not None and p.is_dir()), None)


def default_class(logits: torch.Tensor, decomposed: Sequence[int]) -> tuple[int, int]:
    """(predicted class, class to show first): the prediction when the run decomposed it, else the
    decomposed class with the highest logit."""
    predicted = int(logits.argmax())
    if predicted in decomposed:
        return predicted, predicted
    scores = logits[torch.as_tensor(list(decomposed), dtype=torch.long)]
    return predicted, int(decomposed[int(scores.argmax())])


# -- skipped files -------------------------------------------------------------------------------
def problem_rows(problems: Sequence) -> list[dict]:
    """Problems (``Problem`` objects, ``[path, reason]`` pairs as manifests keep them, or their text
    ``path: reason``) as table rows."""
    rows = []
    for p in problems:
        if isinstance(p, Problem):
            path, reason = p.path, p.reason
        elif isinstance(p, str):
            path, _, reason = p.partition(": ")
        else:
            path, reason = p[0], p[1]
        rows.append({"file or folder": str(path), "problem": str(reason)})
    return rows


# -- prototypes ----------------------------------------------------------------------------------
def direction_top_classes(
    weight: torch.Tensor, prototype: torch.Tensor, labels: Sequence[str], n: int = 3
) -> list[tuple[int, str, float]]:
    """The classes whose head rows score the prototype's direction highest (DFF-style labels):
    ``weight @ p~ / ||p~||``, as (label, name, score)."""
    direction = prototype.float() / prototype.float().norm().clamp_min(1e-12)
    scores = weight.float().cpu() @ direction.cpu()
    values, indices = scores.topk(min(n, len(scores)))
    return [(int(i), labels[int(i)], float(v)) for v, i in zip(values, indices)]


def contribution_meaning(contribution: float, class_name: str) -> str:
    """How to read a prototype from the sign of its mean contribution to the class's logit (never
    from alpha alone: refinement may turn a prototype against the sign of its NMF part's alpha)."""
    if contribution > 0:
        return f"raises the logit of “{class_name}” on its photos: where this part shows, “{class_name}” is more likely"
    if contribution < 0:
        return (
            f"lowers the logit of “{class_name}” on its photos: where this part shows, “{class_name}” is less likely "
            "(often background or context)"
        )
    return f"does not move the logit of “{class_name}”"


def signed(value: float, digits: int = 2) -> str:
    """A number with its sign that never reads as a signed zero: ``+2.31``, ``-4.2e-05``, ``0``."""
    if value == 0:
        return "0"
    text = f"{value:+.{digits}f}"
    return text if float(text) != 0 else f"{value:+.2g}"


@dataclass(frozen=True)
class PrototypeCard:
    """What the Prototypes page says about one prototype of one class."""

    prototype: int  # 1-based
    contribution: float | None  # mean over the class's photos; None when they cannot be read
    share: float | None  # |mean contribution| as a share of all the class's prototypes'
    meaning: str  # from the sign of ``contribution``
    alpha: float  # weight of its NMF part in the head row, before refinement
    top_classes: list[tuple[str, float]]
    name: str = ""  # the name a person gave it ("" when unnamed)
    health: str = ""  # "dead: ...", "duplicate of prototype j: ..." (prototype_health), "" when neither

    @property
    def title(self) -> str:
        return f"Prototype {self.prototype}" + (f" · {self.name}" if self.name else "")

    def row(self) -> dict:
        return {
            "prototype": self.prototype,
            "name": self.name,
            "mean contribution": self.contribution,
            "share": self.share,
            "alpha (NMF part)": self.alpha,
            "reading": self.meaning,
            "top classes of its direction": ", ".join(name for name, _ in self.top_classes),
            "dead or duplicate": self.health,
        }


def prototype_cards(
    alpha: torch.Tensor,
    refined_prototypes: torch.Tensor,
    weight: torch.Tensor,
    class_names: Sequence[str],
    class_name: str,
    contributions: torch.Tensor | None = None,
    n_top: int = 3,
    prototype_names: Sequence[str] = (),
    health: ClassHealth | None = None,
) -> list[PrototypeCard]:
    """One card per prototype of one class, led by its mean contribution over the class's photos
    (``contributions`` (B, k) from ``PrototypeHead.contributions``: the same prototypes and features
    as the logit), its share, and the reading of its sign; alpha and the top classes follow; ``prototype_names`` are the
    prototypes' names ("" when unnamed); ``health`` (on the same photos) marks dead and duplicate ones."""
    mean = contributions.float().mean(dim=0) if contributions is not None and len(contributions) else None
    shares = contribution_shares(mean) if mean is not None else None
    cards = []
    for i in range(len(alpha)):
        top = direction_top_classes(weight, refined_prototypes[i], class_names, n_top)
        contribution = float(mean[i]) if mean is not None else None
        cards.append(
            PrototypeCard(
                prototype=i + 1,
                contribution=contribution,
                share=float(shares[i]) if shares is not None else None,
                meaning=(
                    contribution_meaning(contribution, class_name)
                    if contribution is not None
                    else "its contribution is unknown: the class's training images cannot be read"
                ),
                alpha=float(alpha[i]),
                top_classes=[(name, score) for _, name, score in top],
                name=prototype_names[i] if i < len(prototype_names) else "",
                health=health.note(i) if health is not None else "",
            )
        )
    return cards


def rank_by_contribution(contributions: torch.Tensor, i: int, n: int) -> list[int]:
    """Indices of the images (B, k) where prototype ``i`` moves the logit most, strongest first.

    Ranked by contribution, not raw activation, as PIP-Net does: it is what moved the logit. A
    prototype whose contributions are negative on average (negative evidence) is ranked by how
    negative they are, so that both kinds show where the prototype matters most.
    """
    column = contributions[:, i]
    sign = -1.0 if float(column.mean()) < 0 else 1.0
    return (sign * column).argsort(descending=True)[:n].tolist()


def page_bounds(n_items: int, page: int, per_page: int = GALLERY_PAGE_SIZE) -> tuple[int, int, int]:
    """(start, stop, n_pages) of a 1-based ``page`` (clamped to the pages that exist)."""
    n_pages = max(1, -(-n_items // per_page))
    page = min(max(1, page), n_pages)
    start = (page - 1) * per_page
    return start, min(start + per_page, n_items), n_pages
