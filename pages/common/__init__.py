"""What the pages share, one job per module.

The foundations, in reading order:

- ``navigation``: the page files, and the one workaround for Streamlit's legacy ``pages/`` mode;
- ``state``: the session's choices (widgets kept across pages, automatic names) and its workspace
  (``protolib.workspace``: private runs, upload folders, the data folder it may open);
- ``cache``: Streamlit's caches around protolib (models, runs, features, per-image results);
- ``sidebar``: the sidebar (backbone, device, data folder, current run, publishing) and ``runs_by_name``,
  the one list of runs every page reads (the session's own and the published ones);
- ``weights``: pretrained weights fetched with consent (sidebar) and the feature cache (Decompose);
- ``jobs``: heavy jobs one at a time on the server (a place in line while waiting), progress per stage,
  and the one-click demo;
- ``run_context``: the current run with its model and head, or a notice (with the demo offer);
- ``pickers``: the photo shown on Explain and Intervene;
- ``heldout``: the held-out photos Intervene, Evaluate and Mistakes measure on;
- ``figures``: chips, legend, plotly charts and the skipped-files table.

One page's sections:

- Decompose: ``image_sources`` (data folder, uploaded photos, a zip), ``probe_form`` (a linear probe) and
  ``decomposition_job`` (the run in the background, its progress and result);
- Intervene: ``edits`` and ``space_edit`` (the intervention kept in the session), ``prototype_table``,
  ``shortcut_demo``, ``heldout_effect`` (the edit on the held-out split) and ``save_edit`` (a new run, a download).

No Streamlit at all, tested without a browser: ``viewmodels`` (defaults, prototype cards, skipped files),
``run_views`` (runs and probes tables), ``evaluation_views`` (Evaluate), ``edit_views`` (Intervene),
``compare_views`` (Compare), ``mistake_views`` (Mistakes) and ``uploads`` (uploads saved as data folders).
"""
