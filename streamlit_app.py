"""FaceLab dashboard: the router.

Only page configuration, navigation and the sidebar live here; each page is a file in ``pages/``
and all the work is done in ``core/``. Start it with ``make run``.
"""
from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="FaceLab", page_icon=":material/face:", layout="wide")


@st.cache_resource(show_spinner="Loading the face detector...")
def _device_label() -> str:
    # The detector is the first model every page uses, and get_detector() caches one instance
    # per process, so asking it for its device costs nothing later.
    from core.detection import get_detector
    from core.device import describe_device

    return describe_device(get_detector().device)


# Later issues add their pages here (Train, Runs, Dataset).
PAGES = [
    st.Page("pages/detect.py", title="Detect", icon=":material/face:", default=True),
    st.Page("pages/predict.py", title="Predict", icon=":material/person_search:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
]

page = st.navigation(PAGES)

with st.sidebar:
    try:
        st.caption(f"Device: {_device_label()}")
    except Exception as exc:  # the sidebar is cosmetic: report, let the page explain the rest
        st.caption(f"Device: unknown ({type(exc).__name__}: {exc})")

page.run()
