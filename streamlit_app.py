"""FaceLab dashboard: the router.

Only page configuration, navigation and the sidebar live here; each page is a file in ``pages/``
and all the work is done in ``core/``. Start it with ``make run``.
"""
from __future__ import annotations

import streamlit as st

from pages._routing import router_ran

st.set_page_config(page_title="FaceLab", page_icon=":material/face:", layout="wide")


@st.cache_resource(show_spinner="Loading the face detector...")
def _device_label() -> str:
    # The detector is the first model every page uses, and get_detector() caches one instance
    # per process, so asking it for its device costs nothing later.
    from core.detection import get_detector
    from core.device import describe_device

    return describe_device(get_detector().device)


# Sections follow the three jobs people come for: show a model, understand it, train one.
PAGES = {
    "Demo": [
        st.Page("pages/detect.py", title="Detect", icon=":material/face:", default=True),
        st.Page("pages/predict.py", title="Predict", icon=":material/person_search:"),
        st.Page("pages/live.py", title="Live camera", icon=":material/videocam:"),
    ],
    "Review": [
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
        st.Page("pages/dataset.py", title="Dataset", icon=":material/photo_library:"),
    ],
    "Train": [
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/history:"),
    ],
}

page = st.navigation(PAGES)
router_ran()


def _active_runs() -> list[str]:
    # Read from the runs store on every rerun (a few small JSON files), never from session
    # state: a run started in another tab, or before a server restart, shows up here too.
    from core.runs import list_runs

    return [run.name for run in list_runs() if run.is_active]


with st.sidebar:
    try:
        st.caption(f"Device: {_device_label()}")
    except Exception as exc:  # the sidebar is cosmetic: report, let the page explain the rest
        st.caption(f"Device: unknown ({type(exc).__name__}: {exc})")
    try:
        for name in _active_runs():
            st.page_link("pages/train.py", label=f"Training: {name}", icon=":material/sync:")
    except Exception as exc:  # an unreadable runs folder must not take the app down
        st.caption(f"Runs: unavailable ({type(exc).__name__}: {exc})")

page.run()
