"""What the ground-truth parts benchmark scores (``parts.py``): its methods (the paper's NMF, its refined prototypes,
each discovery variant, k-means and PCA baselines of the same features), the map each is read from, and their
prototypes for a set of runs."""

from __future__ import annotations

from pathlib import Path

from ..backbones import Backbone
from ..evaluation.metrics import oriented_prototypes, training_matrices
from ..method.discovery import DISCOVERIES, DISCOVERY_LABELS, PRESENCE_DAMPING
from ..runs import Run
from .baselines import kmeans_prototypes, pca_prototypes

#: ``kmeans-damped``: the same k-means centroids read as a damped discovery's part maps are (``DAMPED``), so that
#: a discovery that reads its maps that way is compared with k-means read the same way, not only as shown
BASELINES = ("kmeans", "kmeans-damped", "pca")
DAMPED = "unit-evidence"
#: the discovery variants other than the paper's NMF, each scored as a method of its own (its part maps)
VARIANTS = tuple(d for d in DISCOVERIES if d != "nmf")
METHODS = ("nmf", "refined", *VARIANTS, *BASELINES)
# column -> {method: map kind} (see part_scores.prototype_maps); "maps" is the headline
READINGS = {
    "maps": {
        "nmf": "presence",
        "refined": "heatmap",
        **dict.fromkeys(VARIANTS, "presence"),
        "kmeans": "heatmap",
        "kmeans-damped": "presence",
        "pca": "heatmap",
    },
    "coefficients": dict.fromkeys(METHODS, "coefficients"),
}
METHOD_LABELS = {
    "nmf": "NMF part maps (as the app draws them)",
    "refined": "refined heatmaps, turned by sign(alpha)",
    **{v: f"{DISCOVERY_LABELS[v]}: part maps" for v in VARIANTS},
    "kmeans": "k-means centroids (heatmaps)",
    "kmeans-damped": f"k-means centroids, read with damping {PRESENCE_DAMPING[DAMPED]:g} (as {DAMPED}'s part maps)",
    "pca": "PCA directions (heatmaps)",
}


def method_prototypes(
    backbone: Backbone, runs: list[Run], cache: Path, seed: int, variants: dict[str, list[Run]] | None = None
) -> dict[str, dict]:
    """Per method, per class label, the (k, D) prototypes whose maps are scored (see ``READINGS``).

    ``nmf``: the head's ``part_vectors`` (NMF prototypes / presence scale), which ``PrototypeHead.presence``
    draws; ``refined``: the head's prototypes turned by the sign of their alpha; each discovery variant
    (``variants``: its runs of the same classes): its head's ``part_vectors`` likewise; the baselines: k-means
    centroids (``kmeans-damped``: the same ones) and PCA directions of the same training features the run
    factorised.
    """
    variants = variants or {}
    methods: dict[str, dict] = {m: {} for m in METHODS if m not in VARIANTS or m in variants}
    for name, variant_runs in variants.items():
        for run in variant_runs:
            methods[name].update(zip(run.classes.tolist(), run.head(backbone).part_vectors))
    for run in runs:
        matrices = training_matrices(run, backbone, cache)
        parts, oriented = run.head(backbone).part_vectors, oriented_prototypes(run)
        for c, label in enumerate(run.classes.tolist()):
            methods["nmf"][label] = parts[c]
            methods["refined"][label] = oriented[c]
            methods["kmeans"][label] = methods["kmeans-damped"][label] = kmeans_prototypes(matrices[c], run.k, seed)
            methods["pca"][label] = pca_prototypes(matrices[c], run.k)
    return methods
