"""Runs: a decomposition saved as a folder of tensors (safetensors) and a JSON manifest.

    schema    the folder's format: file names, manifest versions and keys, the reader of older versions
    run       ``Run``: a decomposition in memory, the head it rewrites, names, interventions, edits in space
    store     ``save_run`` (atomic) and ``load_run`` (recovered, checked)
    checks    why a manifest or a run's tensors cannot be used
    listing   the run folders under a root, newest first, damaged ones marked
    names     safe and unique folder names, readable defaults

This module only re-exports what most users of a run need.
"""

from .run import Run
from .schema import RunError
from .store import load_run, save_run

__all__ = ["Run", "RunError", "load_run", "save_run"]
