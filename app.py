"""protoscope in the browser: ``streamlit run app.py [-- --data DIR]``.

This file only declares the page configuration, the navigation and the shared sidebar; each page
in ``pages/`` draws, and ``protolib`` computes.
"""

import streamlit as st

from pages import ui

st.set_page_config(
    page_title="protoscope",
    page_icon=":material/category:",
    layout="wide",
    initial_sidebar_state="expanded",
    menu_items={"About": "protoscope: a trained image classifier rewritten as a part-prototype network."},
)

PAGES = [
    st.Page("pages/decompose.py", title="Decompose", icon=":material/account_tree:", default=True),
    st.Page("pages/prototypes.py", title="Prototypes", icon=":material/grid_view:"),
    st.Page("pages/explain.py", title="Explain", icon=":material/image_search:"),
    st.Page("pages/intervene.py", title="Intervene", icon=":material/tune:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/monitoring:"),
]

navigation = st.navigation(PAGES, position="top")
ui.sidebar()
navigation.run()
