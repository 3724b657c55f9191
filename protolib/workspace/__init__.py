"""One server, many people: each person's own folders (their workspace), what they may see, quotas,
clean-up, publishing and the shared demo run.

    layout      where the folders are, and the ids that name them
    session     ``Workspace``: a session's folders, the runs and probes it sees, its upload room
    quotas      folder sizes and the upload quota's error
    cleanup     removing what unused sessions left behind
    publishing  a private run made visible to everybody
    demo_run    the one-click demo run, built once and shared

Heavy jobs wait their turn in ``protolib.job_queue`` and run in ``protolib.background``.

The session id and the upload id are two independent 128-bit hex strings (``protolib.identity`` derives
them from a person's private link or proxy user; ``Workspace.new`` draws them at random): the session id
names only a folder on the server and is never shown; the upload folder may be shown to its own session
(it is its data folder), and another session that learns it still cannot open it
(``config.check_data_folder``). Nothing here imports Streamlit. This module only re-exports ``Workspace``.
"""

from .session import Workspace

__all__ = ["Workspace"]
