"""The app's pages and the one workaround for how Streamlit starts a script next to a ``pages/`` folder.

Streamlit has two ways to make a multipage app: the legacy one, where every file of a ``pages/``
folder next to the main script is a page, and ``st.navigation`` (used by ``app.py``). A
``PagesManager`` decides between them once per process from whether ``pages/`` exists, and only an
``st.navigation`` call switches the legacy mode off. So the very first script run of a fresh server
(and every run under ``streamlit.testing``'s AppTest, which makes a new ``PagesManager`` each time)
executes the requested page file *without* app.py: no page config, no sidebar.

The supported cure is a page folder with another name; this project keeps ``pages/`` and instead
switches the legacy mode off itself, here and nowhere else. ``PagesManager.uses_pages_directory`` is
private Streamlit API (read in ``streamlit/runtime/scriptrunner/script_runner.py``): on a Streamlit
upgrade, check it still exists (``tests/test_app.py`` fails if not).
"""

from __future__ import annotations

import streamlit as st

DECOMPOSE = "pages/decompose.py"
PROTOTYPES = "pages/prototypes.py"
EXPLAIN = "pages/explain.py"
INTERVENE = "pages/intervene.py"
EVALUATE = "pages/evaluate.py"


def leave_pages_folder_mode() -> bool:
    """Switch Streamlit's legacy ``pages/`` folder mode off; True when it was on."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        return True
    return False


def entry() -> None:
    """Call first on every page: make sure the page runs inside app.py's navigation (one rerun when
    Streamlit started it in its legacy folder mode)."""
    if leave_pages_folder_mode():
        st.rerun()


def app_test_pages_manager() -> type:
    """A ``PagesManager`` for ``streamlit.testing``'s AppTest that starts in navigation mode, as a
    server is after its first run: ``monkeypatch.setattr(app_test, "PagesManager", app_test_pages_manager())``."""
    from streamlit.runtime.pages_manager import PagesManager

    class NavigationMode(PagesManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            leave_pages_folder_mode()

    return NavigationMode
