"""Make every page run inside the router (streamlit_app.py), even on a deep link.

Because the page scripts live in a folder named ``pages/``, Streamlit starts each new server in
its old folder-based mode: until some session has run ``streamlit_app.py`` (and so called
``st.navigation``), a first visit to e.g. ``/runs`` runs ``pages/runs.py`` on its own, without
the router's layout, sidebar and page list (and lists the ``_*.py`` helper modules as pages).
Each page calls :func:`run_through_router` first: when the router has never run in this process
it switches the folder mode off and reruns, and the rerun goes through the router to the same
page. That happens at most on a server's first page load, so no widget event is ever lost to the
rerun. (Streamlit's AppTest restarts in folder mode on every run; once its first run has been
through the router, the guard leaves it alone, as before.)
"""
from __future__ import annotations

import streamlit as st

_router_has_run = False


def router_ran() -> None:
    """Called by streamlit_app.py on every run."""
    global _router_has_run
    _router_has_run = True


def run_through_router() -> None:
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and not _router_has_run:
        PagesManager.uses_pages_directory = False
        st.rerun()
