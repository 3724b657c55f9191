"""protoscope in the browser: ``streamlit run app.py [-- --data DIR]``.

This file only declares the page configuration, the navigation and the shared sidebar; each page
in ``pages/`` draws (with ``pages/common/``), and ``protolib`` computes.
"""

import streamlit as st

from pages.common import navigation
from pages.common.sidebar import sidebar
from protolib import config

st.set_page_config(
    page_title="protoscope",
    page_icon=":material/category:",
    layout="wide",
    initial_sidebar_state="expanded",
    menu_items={"About": "protoscope: a trained image classifier rewritten as a part-prototype network."},
)

PAGES = [
    st.Page(navigation.DECOMPOSE, title="Decompose", icon=":material/account_tree:", default=True),
    st.Page(navigation.PROTOTYPES, title="Prototypes", icon=":material/grid_view:"),
    st.Page(navigation.EXPLAIN, title="Explain", icon=":material/image_search:"),
    st.Page(navigation.INTERVENE, title="Intervene", icon=":material/tune:"),
    st.Page(navigation.EVALUATE, title="Evaluate", icon=":material/monitoring:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/mistakes.py", title="Mistakes", icon=":material/build_circle:"),
]

try:  # a bad setting stops the app here, with its one message, instead of failing on every page
    config.check_settings()
except config.ConfigError as exc:
    st.error(f"The server's settings cannot be used: {exc}. Fix the variable and restart the app.")
    st.stop()

page = st.navigation(PAGES, position="top")
sidebar()
page.run()
