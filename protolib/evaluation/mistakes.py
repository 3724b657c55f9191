"""Mistakes and their culprits (the paper's Figure 9 as a search): for every photo of a split the model gets
wrong, the smallest set of prototypes whose switch-off makes the true class top-1; per prototype, the
predictions it fixes and breaks when it alone is off; and a global edit (switch off the harmful ones)
chosen on one half of the photos and scored on the other.

All of it works from cached contributions: switching prototype i of class d off lowers d's logit by its
contribution x and changes no other logit, so "is the true class on top afterwards" is a comparison of
a few logits per photo, batched over the split as (photos, classes, k) tensors. No backbone runs.

Only classes ranked above the true one are searched (a culprit lowers a competitor, as in the paper);
one switch can fix a photo only when a single class outranks the true one, two switches when one class
does (two of its prototypes) or two do (one each). A competitor that was not decomposed has no prototype
to switch off: such mistakes are counted as ``not_decomposed``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..method.head import PrototypeHead
from .intervention import oracle_intervention
from .metrics import among_decomposed

TOP = 5  # classes kept per photo, before and after
MAX_CANDIDATES = 50  # harmful prototypes tried by the greedy global edit, most harmful first


@dataclass
class Culprit:
    """One wrong photo: row ``index`` of the split, its true and predicted labels, the prototypes to switch off
    (``switched``: (class label, prototype) pairs, empty when none or two do not suffice), the true class's
    lead after the edit (``margin`` > 0 when fixed) and the top classes (label, logit) before and after."""

    index: int
    label: int
    predicted: int
    switched: list[tuple[int, int]]
    margin: float
    reason: str  # "one", "two", "not_decomposed" (a class above the true one has no prototypes), "more"
    top_before: list[tuple[int, float]] = field(default_factory=list)
    top_after: list[tuple[int, float]] = field(default_factory=list)

    @property
    def fixed(self) -> bool:
        return bool(self.switched)


@dataclass
class Mistakes:
    """Every wrong photo's culprits, and per prototype the predictions it fixes and breaks alone (C, k)."""

    culprits: list[Culprit]
    n_photos: int
    fixed_alone: torch.Tensor  # (C, k) wrong -> right when this prototype alone is off
    broken_alone: torch.Tensor  # (C, k) right -> wrong

    @property
    def by_one(self) -> list[Culprit]:
        """Mistakes one switch fixes, the clearest (largest margin after the edit) first."""
        return sorted((c for c in self.culprits if c.reason == "one"), key=lambda c: -c.margin)

    @property
    def by_two(self) -> list[Culprit]:
        return sorted((c for c in self.culprits if c.reason == "two"), key=lambda c: -c.margin)

    def count(self, reason: str) -> int:
        return sum(c.reason == reason for c in self.culprits)


def _standings(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per photo: the true logit, the best and second-best competitor (value, and the best one's label)."""
    true = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf"))
    top2 = others.topk(min(2, others.shape[1]), dim=1)
    second = top2.values[:, 1] if top2.values.shape[1] > 1 else torch.full_like(true, float("-inf"))
    return true, top2.values[:, 0], top2.indices[:, 0], second


def switch_effects(head: PrototypeHead, logits: torch.Tensor, contributions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The true class's lead over its best competitor after each prototype alone is switched off, (N, C, k):
    > 0 means the photo is right afterwards. Exact: only the switched class's logit moves."""
    true, best, best_label, second = _standings(logits, labels)
    classes = head.classes.to(labels.device)
    own = classes[None, :] == labels[:, None]  # (N, C): the prototype belongs to the true class
    other_max = torch.where(classes[None, :] == best_label[:, None], second[:, None], best[:, None])  # (N, C)
    moved = logits[:, classes][..., None] - contributions  # (N, C, k): the switched class's new logit
    competitor = torch.maximum(moved, other_max[..., None])
    lead = torch.where(own[..., None], moved - best[:, None, None], true[:, None, None] - competitor)
    return lead


def find_culprits(
    head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor, contributions: torch.Tensor | None = None
) -> Mistakes:
    """Every wrong photo's smallest culprit (one prototype, else two), and each prototype's fixed/broken counts.
    ``labels`` are in the head's label space (all its classes); pass cached ``contributions`` (N, C, k) to
    skip recomputing them."""
    contributions = head.contributions(pooled) if contributions is None else contributions
    logits = head.logits(pooled, contributions)
    labels = labels.long()
    true, best, _, _ = _standings(logits, labels)
    right = true > best
    lead = switch_effects(head, logits, contributions, labels)  # (N, C, k)
    after = lead > 0
    fixed_alone = (after & ~right[:, None, None]).sum(0)
    broken_alone = (~after & right[:, None, None]).sum(0)

    wrong = (~right).nonzero().flatten()
    position = torch.full((logits.shape[1],), -1, dtype=torch.long)
    position[head.classes] = torch.arange(len(head.classes))
    above = logits[wrong] >= true[wrong, None]
    above[torch.arange(len(wrong)), labels[wrong]] = False
    n_above = above.sum(1)
    undecomposed = (above & (position[None, :] < 0)).any(1)  # a class above the true one has no prototypes
    ranked = logits[wrong].scatter(1, labels[wrong, None], float("-inf")).topk(min(3, logits.shape[1] - 1), dim=1)
    # one switch: a prototype of a class above the true one (never of the true class itself) whose removal puts it on top
    one_lead = lead[wrong].masked_fill(head.classes[None, :, None].eq(labels[wrong, None, None]), float("-inf"))
    one_best, one_at = one_lead.flatten(1).max(dim=1)
    culprits = []
    for row, n in enumerate(wrong.tolist()):
        t, gap = int(labels[n]), int(n_above[row])
        competitors = ranked.indices[row, :gap].tolist()
        switched, margin, reason = [], float("-inf"), "more"
        if bool(undecomposed[row]):
            reason = "not_decomposed"
        elif float(one_best[row]) > 0:
            c, i = divmod(int(one_at[row]), head.k)
            switched, margin, reason = [(int(head.classes[c]), i)], float(one_best[row]), "one"
        elif gap <= 2:
            switched, margin = _two(contributions[n], logits[n], t, competitors, position, ranked.values[row])
            reason = "two" if switched else "more"
        culprits.append(Culprit(n, t, int(logits[n].argmax()), switched, margin, reason))
    _fill_tops(head, culprits, pooled, contributions, logits)
    return Mistakes(culprits, len(labels), fixed_alone, broken_alone)


def _two(
    x: torch.Tensor, logits: torch.Tensor, t: int, competitors: list[int], position: torch.Tensor, values: torch.Tensor
) -> tuple[list[tuple[int, int]], float]:
    """The best pair of switches for one photo: two prototypes of the one class above the true one, or the
    largest prototype of each of the two classes above it. ([], -inf) when no pair puts the true class on top."""
    true = float(logits[t])
    if len(competitors) == 1:
        d = competitors[0]
        third = float(values[1]) if len(values) > 1 else float("-inf")
        row = x[int(position[d])]
        pairs = row[:, None] + row[None, :]
        pairs = pairs.triu(1) + torch.full_like(pairs, float("-inf")).tril()  # i < j only
        best = int(pairs.flatten().argmax())
        i, j = divmod(best, len(row))
        margin = min(true - (float(logits[d]) - float(pairs[i, j])), true - third)
        return ([(d, i), (d, j)], margin) if margin > 0 else ([], float("-inf"))
    d, e = competitors
    third = float(values[2]) if len(values) > 2 else float("-inf")
    xd, xe = x[int(position[d])], x[int(position[e])]
    i, j = int(xd.argmax()), int(xe.argmax())
    margin = min(true - (float(logits[d]) - float(xd[i])), true - (float(logits[e]) - float(xe[j])), true - third)
    return ([(d, i), (e, j)], margin) if margin > 0 else ([], float("-inf"))


def culprit_scale(head: PrototypeHead, culprit: Culprit) -> torch.Tensor:
    """The (C, k) intervention of one culprit: its prototypes switched off, every other left on."""
    scale = torch.ones(head.refined_prototypes.shape[:2])
    for label, i in culprit.switched:
        scale[head.position(label), i] = 0
    return scale


def _fill_tops(
    head: PrototypeHead, culprits: list[Culprit], pooled: torch.Tensor, contributions: torch.Tensor, logits: torch.Tensor
) -> None:
    """Top classes before and after each culprit's edit, the after side through ``head.logits`` itself."""
    fixed = [c for c in culprits if c.switched]
    for c in culprits:
        values, indices = logits[c.index].topk(min(TOP, logits.shape[1]))
        c.top_before = [(int(i), float(v)) for v, i in zip(values, indices)]
    if not fixed:
        return
    rows = torch.tensor([c.index for c in fixed])
    scale = torch.stack([culprit_scale(head, c) for c in fixed])  # (M, C, k): one edit per photo
    edited = head.logits(pooled[rows], contributions[rows], scale)
    values, indices = edited.topk(min(TOP, edited.shape[1]), dim=1)
    for c, v, i in zip(fixed, values.tolist(), indices.tolist()):
        c.top_after = [(int(a), float(b)) for a, b in zip(i, v)]


# -- split halves and the global edit ------------------------------------------------------------------
def half_of(path: str | Path) -> int:
    """0 or 1: the half of the held-out photos a photo belongs to, by a hash of its file name (its own salt,
    so the halves do not follow the ImageFolder val split, which hashes the same names)."""
    return hashlib.sha256(f"half|{Path(path).name}".encode()).digest()[0] & 1


def harmful_edit(
    head: PrototypeHead,
    pooled: torch.Tensor,
    labels: torch.Tensor,
    paths: list[str],
    contributions: torch.Tensor | None = None,
    candidates: int = MAX_CANDIDATES,
) -> dict:
    """A global edit chosen on half 0 of the photos ("chosen_on") and scored on half 1 ("scored_on"), which
    played no part in choosing it. The choice is greedy: the prototypes whose switch-off alone fixes more than
    it breaks on half 0, most harmful first, each kept only if it raises half 0's top-1 together with those
    kept before it (switch-offs interact: two "harmful" prototypes can break together what neither broke)."""
    contributions = head.contributions(pooled) if contributions is None else contributions
    halves = torch.tensor([half_of(p) for p in paths], dtype=torch.long)
    chosen, scored = (halves == 0).nonzero().flatten(), (halves == 1).nonzero().flatten()
    x, y, pc = contributions[chosen], labels[chosen], pooled[chosen]
    logits = head.logits(pc, x)
    lead = switch_effects(head, logits, x, y)
    true, best, _, _ = _standings(logits, y)
    right = (true > best)[:, None, None]
    net = ((lead > 0) & ~right).sum(0) - ((lead <= 0) & right).sum(0)
    scale = torch.ones(net.shape)
    correct = int((logits.argmax(1) == y).sum())
    order = sorted(((int(net[c, i]), c, i) for c, i in (net > 0).nonzero().tolist()), reverse=True)[:candidates]
    for _, c, i in order:
        scale[c, i] = 0
        trial = int((head.logits(pc, x, scale).argmax(1) == y).sum())
        if trial > correct:
            correct = trial
        else:
            scale[c, i] = 1
    before = head.logits(pooled[scored], contributions[scored]).argmax(1)
    after = head.logits(pooled[scored], contributions[scored], scale).argmax(1)
    off = [(int(head.classes[c]), int(i)) for c, i in (scale == 0).nonzero().tolist()]

    def top1(predicted: torch.Tensor, rows: torch.Tensor) -> float:
        return float((predicted == labels[rows]).float().mean()) if len(rows) else float("nan")

    return {
        "chosen_on": {
            "half": 0,
            "photos": len(chosen),
            "candidates": len(order),
            "top1_before": top1(logits.argmax(1), chosen),
            "top1_after": top1(head.logits(pc, x, scale).argmax(1), chosen),
        },
        "scored_on": {"half": 1, "photos": len(scored)},
        "rule": "half = first bit of sha256('half|' + file name); on half 0, prototypes whose switch-off alone fixes "
        "more than it breaks, kept greedily while they raise half 0's top-1",
        "switched_off": off,
        "net_on_chosen": [int(net[head.position(d), i]) for d, i in off],
        "top1_before": top1(before, scored),
        "top1_after": top1(after, scored),
    }


# -- the figures -------------------------------------------------------------------------------------
def mistake_figures(
    head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor, paths: list[str], names: list[str]
) -> tuple[dict, Mistakes]:
    """Everything ``protoscope mistakes`` writes (JSON-able) and the Mistakes it stands on. ``names``: the
    head's label names (all its classes)."""
    contributions = head.contributions(pooled)
    found = find_culprits(head, pooled, labels, contributions)
    paper = oracle_intervention(head, pooled, labels)
    edit = harmful_edit(head, pooled, labels, paths, contributions)
    edit["switched_off"] = [{"class": names[d], "prototype": i} for d, i in edit["switched_off"]]

    def photo(c: Culprit) -> dict:
        return {
            "file": paths[c.index],
            "true": names[c.label],
            "predicted": names[c.predicted],
            "reason": c.reason,
            "switched": [{"class": names[d], "prototype": i} for d, i in c.switched],
            "margin": c.margin if c.switched else None,
            "top_before": [[names[d], v] for d, v in c.top_before],
            "top_after": [[names[d], v] for d, v in c.top_after],
        }

    figures = {
        "photos": len(labels),
        "mistakes": len(found.culprits),
        "fixed_by_one": found.count("one"),
        "fixed_by_two": found.count("two"),
        "not_decomposed": found.count("not_decomposed"),
        "not_fixed_by_two": found.count("more"),
        "culprits": [photo(c) for c in found.by_one + found.by_two + [c for c in found.culprits if not c.switched]],
        "oracle_paper": {"top1_before": paper["top1_before"], "top1_after": paper["top1_after"]},
        "oracle_smallest": {
            "top1_before": paper["top1_before"],
            "top1_after": culprit_oracle(head, pooled, labels, found, contributions),
            "top1_after_one_switch": culprit_oracle(head, pooled, labels, found, contributions, 1),
        },
        "harmful": harmful_rows(head, found, names),
        "harmful_edit": edit,
    }
    return figures, found


def culprit_oracle(
    head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor, found: Mistakes, contributions: torch.Tensor, most: int = 2
) -> float:
    """Top-1 with the smallest-culprit oracle: every mistake edited (for that photo only) by its culprit when it
    has at most ``most`` switches, measured through ``head.logits`` as the paper's oracle is."""
    scale = torch.ones(len(labels), *head.refined_prototypes.shape[:2])
    for c in found.culprits:
        if c.switched and len(c.switched) <= most:
            scale[c.index] = culprit_scale(head, c)
    predicted = head.logits(pooled, contributions, scale).argmax(1)
    return float((predicted == labels).float().mean()) if len(labels) else float("nan")


def harmful_rows(head: PrototypeHead, found: Mistakes, names: list[str]) -> list[dict]:
    """Per prototype over the whole split: fixed, broken and net when it alone is off, most harmful first
    (only prototypes that change at least one prediction)."""
    rows = []
    for c, i in (found.fixed_alone + found.broken_alone > 0).nonzero().tolist():
        fixed, broken = int(found.fixed_alone[c, i]), int(found.broken_alone[c, i])
        rows.append({"class": names[int(head.classes[c])], "prototype": i, "fixed": fixed, "broken": broken, "net": fixed - broken})
    return sorted(rows, key=lambda r: (-r["net"], r["broken"]))


def run_class_space(
    head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor, paths: list[str]
) -> tuple[PrototypeHead, torch.Tensor, torch.Tensor, list[str]]:
    """The run as a classifier of its decomposed classes only (as in the paper, which decomposes every class):
    (head, pooled, labels renumbered to positions, paths) of the photos of those classes."""
    restricted, kept_pooled, local = among_decomposed(head, pooled, labels)
    decomposed = set(head.classes.tolist())
    return restricted, kept_pooled, local, [p for p, y in zip(paths, labels.tolist()) if y in decomposed]


def mistakes_json(
    head: PrototypeHead, pooled: torch.Tensor, labels: torch.Tensor, paths: list[str], names: list[str], class_names: list[str]
) -> dict:
    """``protoscope mistakes``'s figures: in the model's whole label space, and, when the run decomposes only
    some of its classes, the same among the run's classes (``run_classes``), where every competitor has
    prototypes."""
    figures, _ = mistake_figures(head, pooled, labels, paths, names)
    figures["label_space"] = f"all {head.weight.shape[0]} classes of the model"
    if len(head.classes) < head.weight.shape[0]:
        restricted, kept_pooled, local, kept_paths = run_class_space(head, pooled, labels, paths)
        figures["run_classes"], _ = mistake_figures(restricted, kept_pooled, local, kept_paths, class_names)
        figures["run_classes"]["label_space"] = f"the run's {len(class_names)} classes"
    return figures
