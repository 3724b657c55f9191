"""Where the app's entry file (``app.py``, with ``pages/`` beside it) is: installed, or in a clone.

``pip install`` puts them inside the library as ``protolib/_app/app.py`` and ``protolib/_app/pages/`` (see
pyproject.toml), so that the only top-level module installed is ``protolib``; in a clone, and in an editable
install (which maps ``protolib`` to the clone's folder, where no ``_app`` exists), they are the clone's own
``app.py`` and ``pages/`` beside the ``protolib`` folder. Streamlit puts the script's folder on ``sys.path``,
so ``from pages.common import ...`` resolves beside whichever ``app.py`` runs.
"""

from __future__ import annotations

from pathlib import Path


def app_script() -> Path:
    """The app's entry file (``app.py`` beside ``pages/``): where ``pip install`` put it, or in a clone."""
    library = Path(__file__).resolve().parent  # the protolib folder
    for path in (library / "_app" / "app.py", library.parent / "app.py"):
        if path.is_file() and (path.parent / "pages" / "common").is_dir():
            return path
    raise FileNotFoundError("the protoscope app (app.py and pages/) is not installed with this package")
