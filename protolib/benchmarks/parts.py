"""The ground-truth parts benchmark: do the method's prototypes find the parts an object is made of?

A generated dataset (``data/synthetic.py``) knows where every part is. A small CNN (``backbones/parts_net.py``)
is trained on it under a fixed protocol (:class:`BenchConfig`), wrapped as a :class:`Backbone`,
decomposed by the method, and its prototypes are scored with the ProtoEval protocol
(``evaluation/protoeval.py``) against the known keypoints, next to baselines that use the *same*
features: k-means centroids and PCA directions per class (``evaluation/part_scores.py``).

Headline reading (``"maps"``): every method is read from the map it is shown with. Each discovery's NMF
prototypes from the part maps the app draws (``PrototypeHead.presence``: ``read_cells(f) . p / presence_scale``,
cells read with the run's presence damping), refined prototypes from the head's heatmaps ``f . p~`` turned by
the sign of their alpha (``metrics.oriented_prototypes``; the head fixes that sign, not the data), k-means and
PCA from their heatmaps ``f . p``, and k-means once more read as the damped discovery's part maps are (so that a
discovery is not credited with what its reading alone gives). Secondary reading (``"coefficients"``): ``f .
pinv(P)``, which no page shows. Every figure is given at k = the class's true number of parts and at true + 2,
over several seeds (each its own data and model), as the mean with a 95 % t-interval over the seeds.

The baselines are in ``baselines.py``, the tables in ``parts_tables.py``, the model's training in ``toy_model.py``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..backbones import Backbone
from ..backbones.parts_net import PartsNet, PartsNetBackbone
from ..data.synthetic import class_names, make_parts_dataset, parts_of_class, read_image_folder, write_image_folder
from ..evaluation.metrics import top1
from ..evaluation.part_scores import protoeval_scores
from ..files import atomic_path
from ..method.discovery import DISCOVERIES, PRESENCE_DAMPING
from ..method.refine import approximation
from ..pipeline import run_decomposition
from ..runs import Run, save_run
from .parts_methods import DAMPED, READINGS, VARIANTS, method_prototypes
from .toy_model import reuse_or_train, to_input, train_parts_net

DEFAULT_SEEDS = (0, 1, 2, 3, 4)
Log = Callable[[str], None]  # one line of progress text


# -- the synthetic benchmark -------------------------------------------------------------------
@dataclass(frozen=True)
class BenchConfig:
    """Sizes and protocol of the benchmark.

    Training protocol, fixed before any part score was computed under it and blind to the parts:
    PartsNet is trained with AdamW (lr 3e-3, weight decay 5e-4, batch 32, random flips and quarter
    turns, a one-cycle learning-rate schedule planned over ``max_epochs``). After every epoch its top-1
    accuracy on the validation split is measured, from class labels only (no keypoint is read), and
    training stops at the first epoch where it is >= ``target_val_accuracy`` (0.98), or after
    ``max_epochs`` (10) if it never is; ``target_val_accuracy=None`` trains exactly ``max_epochs``.
    The number of epochs a seed trained is recorded with its scores.

    Each class is decomposed with k = its number of parts + each of ``k_offsets`` (0 and 2: the true
    count, and more prototypes than parts). All 6 classes by default: every shape and every colour
    then recurs across classes, so the model must tell parts apart by their combination.
    """

    num_classes: int = 6
    size: int = 112
    train_per_class: int = 150
    val_per_class: int = 50
    test_per_class: int = 50
    decompose_per_class: int = 60
    target_val_accuracy: float | None = 0.98
    max_epochs: int = 10
    k_offsets: tuple[int, ...] = (0, 2)
    seed: int = 0

    def protocol(self) -> str:
        """The protocol in words, as results.json states it before the numbers."""
        if self.target_val_accuracy is None:
            stop = f"trained for exactly {self.max_epochs} epochs"
        else:
            stop = (
                f"trained until its validation top-1 accuracy (class labels only, measured after every epoch, "
                f"{self.val_per_class} images per class) first reaches {self.target_val_accuracy:g}, "
                f"for at most {self.max_epochs} epochs"
            )
        return (
            f"Per seed: {self.num_classes} generated classes, {self.train_per_class}/{self.val_per_class}/"
            f"{self.test_per_class} train/val/test images per class at {self.size} px. PartsNet is {stop} "
            f"(AdamW lr 3e-3, weight decay 5e-4, batch 32, flips and quarter turns, one-cycle schedule planned "
            f"over {self.max_epochs} epochs). The stopping rule reads no part annotation and was fixed before "
            f"any part score under it was computed. Each class is decomposed from {self.decompose_per_class} "
            f"training images with k = its number of parts + {', + '.join(map(str, self.k_offsets))}. ProtoEval "
            f"(80 % consistency threshold, box half size scaled from CUB's 36/224) on the test images; "
            f"headline reading 'maps' = each discovery's part maps as the app draws them (PrototypeHead.presence, "
            f"with the run's presence damping), "
            f"refined heatmaps turned by sign(alpha), k-means and PCA heatmaps f.p (and k-means read as {DAMPED}'s "
            f"part maps, damping {PRESENCE_DAMPING[DAMPED]:g}); secondary reading "
            f"'coefficients' = f.pinv(P). Mean over seeds with a 95 % t-interval."
        )


def k_label(offset: int) -> str:
    """How ``scores_by_k`` names a k offset: ``true``, ``true+2``."""
    return "true" if offset == 0 else f"true{offset:+d}"


def _dataset_spec(cfg: BenchConfig) -> dict:
    return {
        "num_classes": cfg.num_classes,
        "size": cfg.size,
        "seed": cfg.seed,
        "train": cfg.train_per_class,
        "val": cfg.val_per_class,
        "test": cfg.test_per_class,
    }


def prepare_data(out: Path, cfg: BenchConfig) -> Path:
    """Generate train/val/test image folders (with keypoints.csv) under ``out/data``, reused when unchanged."""
    root, spec_file = out / "data", out / "data" / "dataset.json"
    if spec_file.is_file() and json.loads(spec_file.read_text()) == _dataset_spec(cfg):
        return root
    for offset, (split, n) in enumerate((("train", cfg.train_per_class), ("val", cfg.val_per_class), ("test", cfg.test_per_class))):
        samples = make_parts_dataset(n, seed=cfg.seed + offset, size=cfg.size, num_classes=cfg.num_classes)
        write_image_folder(samples, root, split)
    with atomic_path(spec_file) as tmp:
        tmp.write_text(json.dumps(_dataset_spec(cfg)))
    return root


def _training_spec(cfg: BenchConfig) -> dict:
    return {"data": _dataset_spec(cfg), "target_val_accuracy": cfg.target_val_accuracy, "max_epochs": cfg.max_epochs}


def prepare_model(out: Path, data: Path, cfg: BenchConfig, log: Log) -> tuple[PartsNetBackbone, dict]:
    """Train PartsNet on CPU under the protocol of :class:`BenchConfig` (or reuse
    ``out/parts_net.safetensors`` when it was trained on this data under this protocol); returns it as
    the backbone ``parts_net:<that file>``."""

    def train() -> tuple[PartsNet, dict]:
        log(
            f"training PartsNet (until val accuracy >= {cfg.target_val_accuracy}, at most {cfg.max_epochs} epochs, "
            f"{cfg.train_per_class} images per class, CPU)"
        )
        history: list[float] = []
        model, val_accuracy = train_parts_net(
            read_image_folder(data, "train"),
            read_image_folder(data, "val"),
            epochs=cfg.max_epochs,
            seed=cfg.seed,
            target_accuracy=cfg.target_val_accuracy,
            progress=lambda epoch, epochs, loss, accuracy: history.append(accuracy) if accuracy is not None else None,
        )
        training = {
            "val_accuracy": val_accuracy,
            "epochs": len(history) if cfg.target_val_accuracy is not None else cfg.max_epochs,
            "val_accuracy_by_epoch": history,
            "reached_target": cfg.target_val_accuracy is None or val_accuracy >= cfg.target_val_accuracy,
        }
        log(f"trained {training['epochs']} epochs, val accuracy {val_accuracy:.3f}")
        return model, training

    return reuse_or_train(out, "benchmark", _training_spec(cfg), class_names(cfg.num_classes), cfg.size, train)


def _decompose(backbone: Backbone, data: Path, cfg: BenchConfig, offset: int, cache: Path, discovery: str = "nmf") -> list[Run]:
    """One run per distinct k, each class getting its number of parts + ``offset`` prototypes."""
    names = class_names(cfg.num_classes)
    groups: dict[int, list[str]] = {}
    for label, name in enumerate(names):
        groups.setdefault(len(parts_of_class(label)) + offset, []).append(name)
    return [
        run_decomposition(
            backbone,
            data,
            "train",
            classes,
            cfg.decompose_per_class,
            k=k,
            random_state=cfg.seed,
            cache_dir=cache,
            discovery=discovery,
        )
        for k, classes in sorted(groups.items())
    ]


@torch.inference_mode()
def discovery_figures(backbone: Backbone, runs_by_discovery: dict[str, list[Run]], data: Path) -> dict[str, dict]:
    """Per discovery, what its prototypes explain of the model, on the test images: ``head_error`` (mean
    over classes of ||v - sum_i alpha_i p_i|| / ||v||: the share of the head row the parts miss) and
    ``prototypes_only`` top-1 % (Table 3: every class's head row replaced by sum_i alpha_i p_i; every
    class is decomposed, so this is the paper's setting), beside ``top1`` % of the model itself."""
    samples = read_image_folder(data, "test")
    x, labels = to_input([s.image for s in samples]), torch.tensor([s.label for s in samples])
    pooled = torch.cat([backbone.spatial_features(x[i : i + 64]).float().mean(dim=(2, 3)) for i in range(0, len(x), 64)])
    weight, bias = backbone.head_weight.float().cpu(), backbone.head_bias.float().cpu()
    figures = {}
    for name, runs in runs_by_discovery.items():
        rows, errors = weight.clone(), []
        for run in runs:
            rows[run.classes] = approximation(run.nmf_prototypes, run.alpha)
            errors += run.head_error(weight).tolist()
        figures[name] = {
            "head_error": float(np.mean(errors)),
            "prototypes_only": 100 * top1(pooled @ rows.T + bias, labels),
            "top1": 100 * top1(pooled @ weight.T + bias, labels),
        }
    return figures


def _test_classes(data: Path, num_classes: int) -> Iterator[tuple[int, torch.Tensor, np.ndarray, np.ndarray]]:
    samples = read_image_folder(data, "test")
    for label in range(num_classes):
        mine = [s for s in samples if s.label == label]
        yield (label, to_input([s.image for s in mine]), np.stack([s.keypoints for s in mine]), np.stack([s.visible for s in mine]))


def run_parts_benchmark(out: str | Path, cfg: BenchConfig | None = None, log: Log | None = None) -> dict:
    """One seed: generate, train (protocol of :class:`BenchConfig`), decompose, score; writes
    ``out/results.json`` and the runs (``out/<k label>/run-k<k>``), returns the results.

    ``results["scores_by_k"][k label][method][reading]`` holds ``consistency`` and ``stability`` in %
    (k labels ``true``, ``true+2``; methods ``parts_methods.METHODS``; readings ``READINGS``: ``maps`` is the headline).
    """
    cfg, out, log = cfg or BenchConfig(), Path(out), log or (lambda message: None)
    started = time.perf_counter()
    data = prepare_data(out, cfg)
    backbone, training = prepare_model(out, data, cfg, log)
    cache = out / "features"
    scores_by_k, alphas, seconds, discovery_by_k = {}, {}, {}, {}
    for offset in cfg.k_offsets:
        label = k_label(offset)
        log(f"k = parts {offset:+d}: decomposing")
        t = time.perf_counter()
        by_discovery = {d: _decompose(backbone, data, cfg, offset, cache, d) for d in DISCOVERIES}
        runs = by_discovery["nmf"]
        for d, found in by_discovery.items():
            for run in found:
                save_run(run, out / label / (f"run-k{run.k}" if d == "nmf" else f"run-k{run.k}-{d}"), overwrite=True)
        log(f"k = parts {offset:+d}: scoring prototypes against the ground-truth parts")
        variants = {d: by_discovery[d] for d in VARIANTS}
        # each discovery's maps as its runs draw them
        damping = {"kmeans-damped": PRESENCE_DAMPING[DAMPED], **{d: found[0].presence_damping for d, found in by_discovery.items()}}
        scores_by_k[label] = protoeval_scores(
            backbone,
            _test_classes(data, cfg.num_classes),
            method_prototypes(backbone, runs, cache, cfg.seed, variants),
            READINGS,
            seed=cfg.seed,
            damping=damping,
        )
        discovery_by_k[label] = discovery_figures(backbone, by_discovery, data)
        alpha = torch.cat([run.alpha.flatten() for run in runs])
        alphas[label] = {"negative": int((alpha < 0).sum()), "prototypes": len(alpha)}
        seconds[label] = round(time.perf_counter() - t, 2)
    results = {
        "protocol": cfg.protocol(),
        "config": asdict(cfg),
        "model": {**training, "fingerprint": backbone.fingerprint},
        "scores_by_k": scores_by_k,
        "discovery_by_k": discovery_by_k,
        "alphas": alphas,
        "headline_reading": "maps",
        "seconds": {**seconds, "total": round(time.perf_counter() - started, 2)},
    }
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    return results


def mean_t_interval(values: Iterable[float], confidence: float = 0.95, bounds: tuple[float, float] = (0.0, 100.0)) -> dict:
    """Mean and two-sided t-interval of the mean over seeds, ``{"mean", "ci95": [low, high], "n"}``:
    mean +- t(0.975, n - 1) s / sqrt(n), clipped to ``bounds`` (a % cannot leave [0, 100]);
    ``ci95`` is None for a single value."""
    from scipy import stats

    values = np.asarray(list(values), dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return {"mean": mean, "ci95": None, "n": len(values)}
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return {"mean": mean, "ci95": [max(bounds[0], mean - half), min(bounds[1], mean + half)], "n": len(values)}


def run_parts_benchmark_seeds(
    out: str | Path, cfg: BenchConfig | None = None, seeds: Iterable[int] = DEFAULT_SEEDS, log: Log | None = None
) -> dict:
    """The benchmark on several seeds, each with its own data and model (``out/seed-<s>``); writes
    ``out/results.json``.

    ``results["scores_by_k"][k label][method][reading][figure]`` = ``{"mean", "ci95", "n", "per_seed":
    {seed: value}}``, figures ``consistency`` and ``stability`` in %; ``results["protocol"]`` states the
    training protocol; ``results["per_seed"][seed]`` holds each seed's model (epochs trained, val
    accuracy by epoch), signs of alpha and scores.
    """
    cfg, out, log = cfg or BenchConfig(), Path(out), log or (lambda message: None)
    per_seed = {}
    for seed in seeds:
        log(f"seed {seed}")
        per_seed[seed] = run_parts_benchmark(out / f"seed-{seed}", replace(cfg, seed=seed), log)
    if not per_seed:
        raise ValueError("no seeds to run")
    first = next(iter(per_seed.values()))["scores_by_k"]
    scores_by_k = {
        label: {
            method: {
                reading: {
                    figure: {
                        **mean_t_interval(r["scores_by_k"][label][method][reading][figure] for r in per_seed.values()),
                        "per_seed": {str(seed): r["scores_by_k"][label][method][reading][figure] for seed, r in per_seed.items()},
                    }
                    for figure in figures
                }
                for reading, figures in per_reading.items()
            }
            for method, per_reading in per_method.items()
        }
        for label, per_method in first.items()
    }
    discovery_by_k = {
        label: {
            name: {
                figure: {
                    **mean_t_interval(
                        (r["discovery_by_k"][label][name][figure] for r in per_seed.values()),
                        bounds=(0.0, 100.0) if figure != "head_error" else (0.0, math.inf),
                    ),
                    "per_seed": {str(seed): r["discovery_by_k"][label][name][figure] for seed, r in per_seed.items()},
                }
                for figure in figures
            }
            for name, figures in per_name.items()
        }
        for label, per_name in next(iter(per_seed.values()))["discovery_by_k"].items()
    }
    results = {
        "protocol": cfg.protocol(),
        "config": {**asdict(cfg), "seed": None},
        "seeds": list(per_seed),
        "headline_reading": "maps",
        "readings": READINGS,
        "scores_by_k": scores_by_k,
        "discovery_by_k": discovery_by_k,
        "per_seed": {
            str(seed): {key: r[key] for key in ("model", "alphas", "scores_by_k", "discovery_by_k")} for seed, r in per_seed.items()
        },
    }
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    return results
