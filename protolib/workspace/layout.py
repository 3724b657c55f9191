"""Where a workspace's folders are, and the ids that name them.

Layout (roots from ``protolib.config``)::

    runs_dir()/shared/<run>              published runs and probes, the demo: everybody sees them
    runs_dir()/<run>                     runs an operator put there (e.g. with the CLI): published too
    runs_dir()/sessions/<session>/<run>  a session's private runs and probes
    uploads_dir()/<upload id>/photos     a session's uploaded photos (a data folder)
    uploads_dir()/<upload id>/datasets/  a session's extracted zips (one data folder each)
"""

from __future__ import annotations

import uuid

SHARED, SESSIONS = "shared", "sessions"
PHOTOS, DATASETS = "photos", "datasets"


def new_id() -> str:
    """An id nobody can guess: 128 random bits."""
    return uuid.uuid4().hex
