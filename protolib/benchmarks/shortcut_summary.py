"""The shortcut benchmark's verdict and table: whether each prototype method meets the bar against DFR, and
shortcut.json as a short markdown table."""

from __future__ import annotations

from . import shortcut_space as space
from .shortcut_config import METHOD_LABELS, PROTOTYPE_METHODS

#: the bar: a prototype method recovers this share of DFR's worst-group gain ...
BAR_GAIN = 0.8
#: ... while changing at most this share of the numbers DFR changes
BAR_NUMBERS = 0.1


def bar(methods: dict) -> dict:
    """Per prototype method: the share of DFR's worst-group gain over ``original`` it recovers, the share of
    DFR's changed numbers it changes, and whether it meets the bar (>= 80 % and <= 10 %)."""
    base, dfr = methods["original"]["worst_group_acc"], methods["dfr"]
    gain = dfr["worst_group_acc"] - base
    verdict = {}
    for name in PROTOTYPE_METHODS:
        m = methods[name]
        recovered = (m["worst_group_acc"] - base) / gain if gain > 0 else None  # DFR gained nothing
        ratio = m["numbers_changed"] / dfr["numbers_changed"]
        verdict[name] = {
            "gain_recovered": recovered,
            "numbers_ratio": ratio,
            "passes": bool(recovered is not None and recovered >= BAR_GAIN and ratio <= BAR_NUMBERS),
        }
    return verdict


def shortcut_table(results: dict) -> str:
    """A short markdown table of shortcut.json: per method, mean and worst-group test accuracy and the
    numbers of the head it changes; then the bar."""
    rows = [
        f"Test split, mean over {results['seeds']} seeds ({results['labels_per_group']} labels per group for "
        f"DFR and the fitted scales).",
        "",
        "| method | mean acc % | worst-group acc % | numbers changed |",
        "|---|---|---|---|",
    ]
    for name, m in results["methods"].items():
        changed = f"{m['numbers_changed']:.1f}" if name != "oracle" else f"{m['numbers_changed']:.1f} per-image edits"
        rows.append(
            f"| {METHOD_LABELS.get(name, name)} | {100 * m['mean_acc']:.1f} | {100 * m['worst_group_acc']:.1f} | {changed} |"
        )
    rows.append("")
    rows.append(f"Background prototypes found (mask rule) in {100 * results['background_prototypes_found']:.0f} % of the classes.")
    ref = results.get("reference_scales_fit_on_test")
    if ref:
        rows.append(
            f"Reference, not a method: the same scale fit run on the test labels themselves (in-sample) "
            f"reaches {100 * ref['mean_acc']:.1f} % mean, {100 * ref['worst_group_acc']:.1f} % worst group."
        )
    cells = results.get("reference_object_cells")
    if cells:
        rows.append(
            f"Reference, not a method: the model's own head on its features pooled over the object's cells only "
            f"(every test photo's mask) reaches {100 * cells['mean_acc']:.1f} % mean, "
            f"{100 * cells['worst_group_acc']:.1f} % worst group."
        )
    if results.get("head_error_range"):
        low, high = results["head_error_range"]
        rows.append(
            f"The NMF prototypes alone leave {100 * low:.0f}-{100 * high:.0f} % of each class's head vector "
            f"unspanned (||v - sum alpha p|| / ||v||); the refinement spreads that residual over them."
        )
    if results.get(space.NAME):
        rows += space.summary_lines(results[space.NAME])
    for name, v in results["bar"].items():
        recovered = "n/a (DFR gained nothing)" if v["gain_recovered"] is None else f"{100 * v['gain_recovered']:.0f} %"
        rows.append(
            f"- {name}: recovers {recovered} of DFR's worst-group gain with "
            f"{100 * v['numbers_ratio']:.1f} % of its numbers changed: "
            f"{'meets' if v['passes'] else 'does not meet'} the bar (>= {100 * BAR_GAIN:.0f} %, <= "
            f"{100 * BAR_NUMBERS:.0f} %)."
        )
    return "\n".join(rows)
