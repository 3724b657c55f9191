"""protoscope's library: a trained image classifier rewritten as a post-hoc part-prototype network.

The layers, each importing only the ones above it::

    config                          where the package's resources, runs and caches live
    method/     nmf, refine, estimator (PartPrototypes), head (PrototypeHead): tensors in, tensors out
    backbones/  the adapter contract, the registry, weights and their preprocessing
    data/       image folders, uploads, the feature cache, CUB, generated parts data
    runs        a decomposition on disk (safetensors + manifest)
    pipeline    a data folder -> a run;  probe: a linear probe for models whose head is not linear
    explain     heatmaps, part maps and figures of one image
    evaluation/ metrics, intervention, faithfulness, ProtoEval
    report/     the evaluation report (JSON + one HTML page)
    benchmarks/ the ground-truth parts benchmark
    cli         ``python -m protolib``
"""

from .backbones import load_backbone
from .method import PartPrototypes, PrototypeHead
from .pipeline import run_decomposition
from .runs import Run, RunError, load_run, save_run

__all__ = ["PartPrototypes", "PrototypeHead", "Run", "RunError", "load_backbone", "load_run", "run_decomposition", "save_run"]
