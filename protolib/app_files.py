"""Where the app's files are: the entry file that ``protoscope app`` hands to Streamlit."""

from __future__ import annotations

from pathlib import Path


def app_script() -> Path:
    """The app's entry file (``app.py`` beside ``pages/``): in a clone, or where ``pip install`` put it."""
    import importlib.util

    spec = importlib.util.find_spec("app")  # found, not imported: importing it would draw the app
    path = Path(spec.origin) if spec and spec.origin else None
    if path is None or not (path.parent / "pages" / "common").is_dir():
        raise FileNotFoundError("the protoscope app (app.py and pages/) is not installed with this package")
    return path
