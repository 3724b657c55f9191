"""The shortcut benchmark: can editing prototypes repair a model that leans on the background?

Generated photos (``data/synthetic_shortcut.py``): each class's object on a background. In the training split
each class shows its own background (a colour and texture of its own) with probability 0.95, another
class's otherwise; in the validation and test splits every (class, background) group has the same
number of photos, so the background says nothing about the class. A small CNN (``toy_model.py``)
trained on the training split takes the shortcut: on the test split its worst group (an object on
another class's background) is far below its mean. Its head is decomposed into part prototypes
(``run_decomposition`` on held-out photos of the training distribution), and five repairs are compared
on the test split by mean and worst-group accuracy:

- ``original``: the model as trained;
- ``dfr``: Deep Feature Reweighting (Kirichenko et al. 2022): the whole linear head retrained, as an
  L1-regularised logistic regression on standardised pooled features of a small group-balanced labelled
  set (the validation split), its strength chosen by worst-group accuracy on halves of that set;
- ``prototypes_by_mask``: every prototype whose positive heatmap mass lies mostly on the background
  (measured on the object masks of a few photos per class) is switched off (scale 0);
- ``prototypes_few_labels``: one scale in [0, 1] per prototype fitted on the same labelled set as DFR
  (projected gradient on the group-balanced cross-entropy of the prototype head's logits);
- ``oracle``: the paper's Table-4 rule (per test image, with its true label), for reference only.

Two more references, not methods, say why the prototype methods fail where DFR succeeds: the model's own
head on its features pooled over the object's cells only (``object_cells_logits``: the background is
separable in space), and the share of each head row the NMF prototypes leave unspanned (``head_error``).
``shortcut_demo.build_shortcut_demo`` builds the first seed once per server for the app's Intervene page.

The parts: ``shortcut_config`` (methods, protocol), ``shortcut_splits`` (the data and its features),
``dfr``, ``mask_rule``, ``prototype_scales``, ``shortcut_space`` (the repairs), ``shortcut_summary`` (the bar
and the table); here, one seed and several.

Training protocol (fixed before any result under it; :class:`ShortcutConfig`, stated in shortcut.json):
PartsNet, AdamW lr 3e-3, weight decay 5e-4, batch 32, random flips and quarter turns, one-cycle schedule,
exactly ``epochs`` (14) epochs on the training split (150 photos per class, 4 classes, 112 px); no early
stopping, no model selection. One dataset for all seeds (``DIR/data``); each seed trains its own model,
decomposes with its own NMF seed and draws its own DFR halves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..backbones.parts_net import PartsNet, PartsNetBackbone
from ..data.synthetic import class_names, read_image_folder
from ..evaluation.intervention import group_accuracy
from ..files import atomic_path
from ..pipeline import run_decomposition
from ..runs import Run, save_run
from . import shortcut_space as space
from .dfr import dfr_head
from .mask_rule import background_fractions
from .prototype_scales import fit_scales, oracle_logits, scales_changed
from .shortcut_config import METHODS, PROTOTYPE_METHODS, ShortcutConfig
from .shortcut_splits import GroupedFeatures, data_spec, grouped_features, object_cells_logits, prepare_shortcut_data
from .shortcut_summary import bar, shortcut_table
from .toy_model import reuse_or_train, train_parts_net

DEFAULT_SEEDS = 3
REFERENCE_NOTE = (
    "not a method: prototypes_few_labels' fit (group-balanced cross-entropy) run on the test labels "
    "themselves, in-sample: what the fitted scales reach with the test split as their labelled set"
)
OBJECT_CELLS_NOTE = (
    "not a method: the model's own head on its features pooled over the object's cells only (every "
    "test photo's mask): what the features hold once the background is left out"
)
Log = Callable[[str], None]


def _training_spec(cfg: ShortcutConfig, seed: int) -> dict:
    return {"data": data_spec(cfg), "epochs": cfg.epochs, "seed": seed}


def prepare_model(out: Path, data: Path, cfg: ShortcutConfig, seed: int, log: Log) -> tuple[PartsNetBackbone, dict]:
    """Train PartsNet on the training split under the protocol for ``seed`` (or reuse
    ``out/parts_net.safetensors`` trained under it); returns it as the backbone ``parts_net:<that file>``."""

    def train() -> tuple[PartsNet, dict]:
        log(f"training PartsNet for {cfg.epochs} epochs on the training split (CPU)")
        model, heldout_accuracy = train_parts_net(
            read_image_folder(data, "train"),
            read_image_folder(data, "heldout"),
            epochs=cfg.epochs,
            seed=seed,
        )
        log(f"trained: accuracy on held-out training-distribution photos {heldout_accuracy:.3f}")
        return model, {"epochs": cfg.epochs, "heldout_accuracy": heldout_accuracy}

    spec = _training_spec(cfg, seed)
    return reuse_or_train(out, "shortcut_benchmark", spec, class_names(cfg.num_classes), cfg.size, train)


def _result(logits: torch.Tensor, split: GroupedFeatures, numbers_changed: int) -> dict:
    acc = group_accuracy(logits, split.labels, split.groups)
    return {
        "mean_acc": acc["mean"],
        "worst_group_acc": acc["worst_group"],
        "numbers_changed": numbers_changed,
        "per_group": acc["per_group"],
    }


def decompose_heldout(backbone: PartsNetBackbone, data: Path, cfg: ShortcutConfig, seed: int, cache: Path) -> Run:
    """The protocol's decomposition: the held-out split's photos, ``cfg.k`` prototypes, NMF seed = model seed."""
    return run_decomposition(
        backbone,
        data,
        "heldout",
        images_per_class=cfg.heldout_per_class,
        k=cfg.k,
        random_state=seed,
        cache_dir=cache,
        discovery=cfg.discovery,
    )


def run_shortcut_seed(out: Path, data: Path, cfg: ShortcutConfig, seed: int, log: Log) -> dict:
    """One seed: train, decompose (saved as ``out/run``), repair, score on the test split."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    backbone, training = prepare_model(out, data, cfg, seed, log)
    cache = out / "features"
    log(f"decomposing the held-out photos, k = {cfg.k}")
    run = decompose_heldout(backbone, data, cfg, seed, cache)
    save_run(run, out / "run", overwrite=True)
    head = run.head(backbone)
    heldout, val, test = (grouped_features(backbone, data, s, cache) for s in ("heldout", "val", "test"))
    exactness = float((head(test.pooled)[0] - test.logits).abs().max())
    num_classes = head.weight.shape[0]

    log("repairing: DFR, prototypes by mask, prototypes by few labels, oracle")
    results = {"original": _result(head(test.pooled)[0], test, 0)}
    weight, bias, dfr_c = dfr_head(heldout.pooled, val.pooled, val.labels, val.groups, num_classes, seed, cfg.dfr_halves)
    results["dfr"] = _result(test.pooled @ weight.T + bias, test, weight.numel() + bias.numel())
    fractions = background_fractions(backbone, run, data, "heldout", cfg.mask_photos_per_class, cache)
    by_mask = (fractions <= cfg.mask_threshold).float()
    contributions = head.contributions(test.pooled)
    results["prototypes_by_mask"] = _result(head.logits(test.pooled, contributions, by_mask), test, scales_changed(by_mask))
    results[space.NAME], in_space = space.space_by_discovered_parts(backbone, run, head, data, by_mask, "test", cache)
    fitted = fit_scales(head, val.pooled, val.labels, val.groups, cfg.fit_steps, cfg.fit_lr)
    results["prototypes_few_labels"] = _result(head.logits(test.pooled, contributions, fitted), test, scales_changed(fitted))
    oracle, edited = oracle_logits(head, test.pooled, test.labels)
    results["oracle"] = _result(oracle, test, edited)
    # reference only: the fitted scales with the test split itself as the labelled set (in-sample)
    bound = group_accuracy(
        head.logits(test.pooled, contributions, fit_scales(head, test.pooled, test.labels, test.groups, cfg.fit_steps, cfg.fit_lr)),
        test.labels,
        test.groups,
    )
    cells = group_accuracy(object_cells_logits(backbone, data, "test", cache), test.labels, test.groups)
    names = run.class_names
    return {
        "model": {**training, "fingerprint": backbone.fingerprint},
        "k": run.k,
        "exactness_max_abs_logit_diff": exactness,
        "dfr_C": dfr_c,
        "background_fraction": {names[c]: [round(float(f), 4) for f in row] for c, row in enumerate(fractions)},
        "background_prototypes": {names[c]: int((row == 0).sum()) for c, row in enumerate(by_mask)},
        "scales": {"prototypes_by_mask": by_mask.tolist(), "prototypes_few_labels": fitted.tolist()},
        "methods": results,
        "space": in_space,
        "reference_scales_fit_on_test": {"mean_acc": bound["mean"], "worst_group_acc": bound["worst_group"]},
        "reference_object_cells": {"mean_acc": cells["mean"], "worst_group_acc": cells["worst_group"]},
        # ||v - sum alpha p|| / ||v||: the share of each head row that the NMF prototypes alone do not span
        "head_error": {names[c]: round(float(e), 4) for c, e in enumerate(run.head_error(backbone.head_weight))},
        "seconds": round(time.perf_counter() - started, 2),
    }


def run_shortcut_benchmark(
    out: str | Path,
    cfg: ShortcutConfig | None = None,
    seeds: Iterable[int] | int = DEFAULT_SEEDS,
    log: Log | None = None,
) -> dict:
    """The whole benchmark: ``out/data`` (with groups.csv and masks), per seed ``out/seed-<s>`` (model, run,
    features), and ``out/shortcut.json`` and ``out/shortcut.md``; returns what shortcut.json holds."""
    cfg, out, log = cfg or ShortcutConfig(), Path(out), log or (lambda message: None)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise ValueError("no seeds to run")
    started = time.perf_counter()
    log("generating the data")
    data = prepare_shortcut_data(out, cfg)
    per_seed = {}
    for seed in seeds:
        log(f"seed {seed}")
        per_seed[seed] = run_shortcut_seed(out / f"seed-{seed}", data, cfg, seed, log)
    methods = {}
    for name in METHODS:
        values = {seed: r["methods"][name] for seed, r in per_seed.items()}
        methods[name] = {
            **{
                key: float(np.mean([v[key] for v in values.values()])) for key in ("mean_acc", "worst_group_acc", "numbers_changed")
            },
            "per_seed": {
                str(seed): {key: v[key] for key in ("mean_acc", "worst_group_acc", "numbers_changed")} for seed, v in values.items()
            },
        }
    methods["oracle"]["numbers_changed_note"] = (
        "per-image edits: one prototype switched off in each wrong test prediction, chosen with the test "
        "labels; not a fixed edit of the head and not comparable"
    )
    methods["dfr"]["numbers_changed_note"] = "the whole head: C x D weights + C biases"
    for name in PROTOTYPE_METHODS:
        methods[name]["numbers_changed_note"] = "prototype scales that differ from 1 (of C x k)"
    methods[space.NAME]["numbers_changed_note"] = "parts whose cells are left out of the pooling; no weight changed"
    found = [np.mean([n > 0 for n in r["background_prototypes"].values()]) for r in per_seed.values()]
    results = {
        "seeds": len(seeds),
        "labels_per_group": cfg.labels_per_group,
        "background_prototypes_found": float(np.mean(found)),
        "protocol": cfg.protocol(),
        "command": f"python -m protolib shortcut-benchmark --out {out} --seeds {len(seeds)}",
        "config": {**asdict(cfg), "k": cfg.k},
        "methods": methods,
        "bar": bar(methods),
        space.NAME: space.summary(per_seed, methods),
        **{
            name: {
                "note": note,
                **{key: float(np.mean([r[name][key] for r in per_seed.values()])) for key in ("mean_acc", "worst_group_acc")},
            }
            for name, note in (("reference_scales_fit_on_test", REFERENCE_NOTE), ("reference_object_cells", OBJECT_CELLS_NOTE))
        },
        "head_error_range": [
            min(min(r["head_error"].values()) for r in per_seed.values()),
            max(max(r["head_error"].values()) for r in per_seed.values()),
        ],
        "per_seed": {str(seed): {key: value for key, value in r.items()} for seed, r in per_seed.items()},
        "seconds": round(time.perf_counter() - started, 2),
    }
    with atomic_path(out / "shortcut.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    with atomic_path(out / "shortcut.md") as tmp:
        tmp.write_text(shortcut_table(results) + "\n")
    return results
