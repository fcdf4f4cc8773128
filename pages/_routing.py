"""Make every page run inside the router (streamlit_app.py), even on a deep link.

Because the page scripts live in a folder named ``pages/``, Streamlit starts each new server in
its old folder-based mode: until some session has run ``streamlit_app.py`` (and so called
``st.navigation``), a first visit to e.g. ``/runs`` runs ``pages/runs.py`` on its own, without
the router's layout, sidebar and page list (and lists the ``_*.py`` helper modules as pages).
Each page calls :func:`run_through_router` first: in that mode it switches the folder mode off
for the process and reruns, and the rerun goes through the router to the same page.
"""
from __future__ import annotations

import streamlit as st


def run_through_router() -> None:
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
