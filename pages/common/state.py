"""What one browser session has chosen: widgets whose values survive page switches, text fields that
follow an automatic value until typed in, and the person's own place on the server (their workspace:
private runs, uploads), found again after a reload, and the data folder they may open.

Everything per user lives in ``st.session_state``: nothing per user is kept in module globals or in
a resource cache.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import streamlit as st

from pages.common.viewmodels import cli_data_arg
from pages.common.viewmodels import default_data_dir as find_default_data_dir
from protolib import config, identity
from protolib.background import BACKGROUND
from protolib.config import DataFolderRefused
from protolib.workspace import Workspace
from protolib.workspace.cleanup import clean_up_now_and_then

LINK = "ws"  # the query parameter that holds a private link's token
log = logging.getLogger(__name__)


def kept(
    widget: Callable,
    label: str | None,
    name: str,
    default,
    options: Sequence | None = None,
    on_change: Callable | None = None,
    **kwargs,
):
    """Draw ``widget`` whose value is the session's choice ``name``, kept across page switches.

    Streamlit forgets a widget's state when a page does not draw it, so the choice lives in
    ``st.session_state[name]`` and seeds the widget (key ``w.<name>``) on every run; a value that
    is no longer among ``options`` falls back to ``default``.
    """
    state = st.session_state
    wkey = f"w.{name}"
    value = state.get(name, default)
    if options is not None:
        options = list(options)
        if isinstance(value, list):
            value = [v for v in value if v in options]
        elif value not in options:
            value = default if default in options else (options[0] if options else None)
    state[name] = value
    state[wkey] = value

    def changed():
        state[name] = state[wkey]
        if on_change is not None:
            on_change()

    args = [] if label is None else [label]
    if options is not None:
        args.append(options)
    return widget(*args, key=wkey, on_change=changed, **kwargs)


def follow_automatic(name: str, automatic: str) -> None:
    """Let the text choice ``name`` follow ``automatic`` (e.g. a run name made from the settings)
    until the user types their own; an emptied field follows it again."""
    state = st.session_state
    if state.get(name) in (None, "", state.get(f"{name}.auto")):
        state[name] = automatic
    state[f"{name}.auto"] = automatic


def restart_automatic(name: str) -> None:
    """After the name was used (a run saved): the next one is automatic again."""
    st.session_state[name] = ""


def workspace() -> Workspace:
    """This person's place on the server (their private runs and uploads). Found on the session's first
    run from the proxy's user (when ``$PROTOLIB_USER_HEADER`` names the header) or the private link in the
    address (a new link when there is none, or it is malformed, unknown or forgotten); what unused
    workspaces left behind is cleaned up then too. Its folders are marked used on every run, and the link
    is put back in the address whenever a page switch dropped it."""
    session = st.session_state
    found = session.get("workspace")
    if not isinstance(found, Workspace):
        found = _identify()
    link = session.get("workspace_link")
    if link and st.query_params.get(LINK) != link:
        st.query_params[LINK] = link
    found.touch()
    return found


def _identify() -> Workspace:
    runs_root, uploads_root = config.runs_dir(), config.uploads_dir()
    clean_up_now_and_then(runs_root, uploads_root, config.sharing_limits().max_age)
    header = config.user_header()
    user = st.context.headers.get(header) if header else None  # never read unless the operator trusts it
    try:
        found = identity.identify(runs_root, uploads_root, st.query_params.get(LINK), user, header)
    except identity.IdentityError as exc:  # the operator's to fix: the visitor gets one line, the log the detail
        log.error("%s", exc)
        st.error("This server cannot tell workspaces apart (its workspace secret is unreadable): tell whoever runs it.")
        st.stop()
    if found.by_proxy and LINK in st.query_params:
        del st.query_params[LINK]  # the proxy decides: a link in the address means nothing
    st.session_state["workspace"] = found.workspace
    st.session_state["workspace_link"] = found.token  # kept only to put back in the address
    return found.workspace


def by_proxy() -> bool:
    """Whether the team's proxy, not a private link, decides whose workspace this is."""
    workspace()
    return not st.session_state.get("workspace_link")


def forget_me() -> None:
    """Delete this person's workspace (private runs, probes, uploads, jobs) and start afresh: a private
    link gets a new token, so the old address opens nothing any more."""
    found = workspace()
    BACKGROUND.forget(found.session)
    found.forget()
    st.session_state.clear()  # every choice may name what was deleted
    st.session_state["forgotten"] = True


def session_id() -> str:
    """This session's secret id (names its private runs folder; never shown on a page)."""
    return workspace().session


def upload_root() -> Path:
    """This session's own data folder for uploaded photos."""
    return workspace().photos


def dataset_root() -> Path:
    """This session's own folder for uploaded zips of image folders (one data folder per zip)."""
    return workspace().datasets


def launch_data_dir() -> Path | None:
    """The folder given at launch (``streamlit run app.py -- --data DIR``): the operator's, so allowed."""
    given = cli_data_arg(sys.argv[1:])
    return Path(given).expanduser() if given else None


def default_data_dir() -> str:
    """The data folder a new session starts with: ``--data``, ``$PROTOLIB_DATA`` or the sample photos."""
    found = find_default_data_dir(sys.argv[1:])
    return str(found) if found else ""


def checked_data_dir() -> tuple[str, str | None]:
    """(the session's data folder, resolved, or "" when it may not be opened; why not, or None)."""
    text = st.session_state.get("data_dir") or ""
    if not text:
        return "", None
    extra = [launch_data_dir()] if launch_data_dir() else []
    try:
        return str(workspace().check_data_folder(text, extra)), None
    except DataFolderRefused as exc:
        return "", str(exc)


def data_dir() -> str:
    """The session's data folder (set in the sidebar), or "" when none is set or it may not be opened."""
    return checked_data_dir()[0]


def data_refusal() -> str | None:
    """Why the folder typed in the sidebar may not be opened, or None."""
    return checked_data_dir()[1]
