"""What the pages share, one job per module (read in this order):

- ``navigation``: the page files, and the one workaround for Streamlit's legacy ``pages/`` mode;
- ``state``: the session's choices (widgets kept across pages, automatic names) and its workspace
  (``protolib.workspace``: private runs, upload folders, the data folder it may open);
- ``cache``: Streamlit's caches around protolib (models, runs, features, per-image results);
- ``sidebar``: the sidebar (backbone, device, data folder, current run, publishing) and ``runs_by_name``,
  the one list of runs every page reads (the session's own and the published ones);
- ``jobs``: heavy jobs one at a time on the server (a place in line while waiting), progress per stage,
  and the one-click demo;
- ``run_context``: the current run with its model and head, or a notice (with the demo offer);
- ``pickers``: the photo shown on Explain and Intervene;
- ``heldout``: the held-out photos Intervene and Evaluate measure on;
- ``figures``: chips, legend, plotly charts and the skipped-files table;
- ``viewmodels`` and ``uploads``: no Streamlit at all; rows, cards, defaults and uploads, tested without a browser.
"""
