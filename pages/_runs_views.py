"""The Runs page's pieces (imported by pages/runs.py; not a page itself: the router lists its
pages explicitly): session keys, the callbacks of the rename / note / delete buttons, cell styles,
and the comparison (curves, per-class accuracy, settings).

Changes run in button callbacks, before the rerun draws anything, so the table, the selection and
the messages drawn afterwards already show the result.
"""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from core.compare import STATUS_COLOURS, runs_signature
from core.runs import RunError, delete_run, load_run, rename_run, set_note

SELECTED = "runs_selected"          # multiselect: names of the selected runs
TABLE_VERSION = "runs_table_version"  # bumped when the selection changes outside the table
CONFIRM = "runs_confirm_delete"     # name of the run whose deletion awaits confirmation
FLASH = "runs_flash"                # (kind, message) left by a callback for the next rerun
TABLE_ROWS = "runs_table_rows"      # (table key, run name of each row) for the selection callback
CSS_COLOURS = {"blue": "#1c6dd0", "green": "#21873b", "orange": "#c26a00", "red": "#c62828",
               "violet": "#7b3fc4", "gray": "#6b6b6b"}


def _flash(kind: str, message: str) -> None:
    st.session_state[FLASH] = (kind, message)


def bump_table() -> None:
    st.session_state[TABLE_VERSION] = st.session_state.get(TABLE_VERSION, 0) + 1


def on_table_select() -> None:
    # st.dataframe's on_select takes no arguments: the table's key and row names are left in
    # session state by the script run that drew it.
    key, names = st.session_state[TABLE_ROWS]
    rows = st.session_state[key]["selection"]["rows"]
    st.session_state[SELECTED] = [names[i] for i in rows if i < len(names)]


def rename(name: str, root) -> None:
    new = st.session_state.get(f"rename_{name}", "").strip()
    if new == name:
        return
    try:
        rename_run(load_run(name, root), new)
    except (RunError, OSError) as exc:
        _flash("error", f"Not renamed: {exc}")
        return
    st.session_state[SELECTED] = [new if n == name else n for n in st.session_state.get(SELECTED, [])]
    bump_table()
    _flash("success", f"Renamed {name} to {new}.")


def save_note(name: str, root) -> None:
    try:
        set_note(load_run(name, root), st.session_state.get(f"note_{name}", ""))
    except (RunError, OSError) as exc:
        _flash("error", f"Note not saved: {exc}")
        return
    _flash("success", f"Note of {name} saved.")


def ask_delete(name: str, root) -> None:
    try:
        status = load_run(name, root).status
    except RunError as exc:
        _flash("error", str(exc))
        return
    if status == "running":
        _flash("error", f"{name} is running and cannot be deleted: stop it on the Train page "
                        f"first (a running run is never deleted).")
        return
    st.session_state[CONFIRM] = name


def delete(name: str, root) -> None:
    st.session_state.pop(CONFIRM, None)
    try:
        delete_run(load_run(name, root))
    except (RunError, OSError) as exc:
        _flash("error", f"Not deleted: {exc}")
        return
    st.session_state[SELECTED] = [n for n in st.session_state.get(SELECTED, []) if n != name]
    bump_table()
    _flash("success", f"Deleted run {name}.")


REFRESH_SECONDS = 3


@st.fragment(run_every=REFRESH_SECONDS)
def refresh_while_training(root, shown: tuple) -> None:
    """While a run trains, redraw the page when the runs store has moved on (an epoch ended, a
    run finished or started). Only then: a rerun for nothing would disturb a user mid-edit."""
    if runs_signature(root) != shown:
        st.rerun(scope="app")


def status_style(value) -> str:
    colour = CSS_COLOURS.get(STATUS_COLOURS.get(value, ""), "")
    return f"color: {colour}; font-weight: 600" if colour else ""


def diff_style(value, spread: bool = False) -> str:
    """Green where the later run is better, red where worse (amber for a spread, which has no
    direction); stronger for bigger gaps."""
    if value is None or pd.isna(value) or abs(value) < 1e-9:
        return ""
    alpha = min(0.85, 0.2 + abs(float(value)))
    rgb = "194, 106, 0" if spread else "33, 135, 59" if value > 0 else "198, 40, 40"
    return f"background-color: rgba({rgb}, {alpha:.2f}); color: white; font-weight: 600"


def pct(value) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.1%}"


def show_flash() -> None:
    flash = st.session_state.pop(FLASH, None)
    if flash:
        (st.success if flash[0] == "success" else st.error)(flash[1])


def render_compare(result: dict, names: list[str]) -> None:
    """Curves, per-class accuracy and settings of ``core.compare.compare``'s result."""
    several = len(names) > 1
    st.header("Compare" if several else f"Run {names[0]}")
    history = result["history"]
    if history.empty:
        st.info("No finished epoch yet: the curves appear after the first epoch.")
    else:
        fig = px.line(history, x="epoch", y="value", color="run", line_dash="split",
                      facet_col="metric", markers=True,
                      category_orders={"metric": ["loss", "accuracy"]},
                      color_discrete_sequence=px.colors.qualitative.Set1,  # runs far apart in hue
                      labels={"value": "", "split": "split"})
        fig.update_yaxes(matches=None, showticklabels=True)
        # Log loss: one diverging run (loss 100) would otherwise flatten every other curve.
        fig.update_yaxes(type="log", dtick="D2", col=1)  # D2: 1, 2, 5 per decade, not every digit
        fig.update_xaxes(dtick=1 if history["epoch"].max() <= 20 else None)
        fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1].replace(
            "loss", "loss (log scale)")))
        fig.update_layout(height=360, margin=dict(t=30, b=10), legend_title_text="")
        st.subheader("Training curves")
        st.plotly_chart(fig, key="runs_curves")

    left, right = st.columns([3, 2])
    per_class = result["per_class"]
    with left:
        st.subheader("Per-class accuracy (val, best checkpoint)")
        recorded = [c for c in per_class.columns if c != "class" and not c.startswith("n ")
                    and c != "difference"]
        if recorded:
            if len(recorded) == 2:
                per_class = per_class.rename(
                    columns={"difference": f"{recorded[1]} - {recorded[0]}"})
            shown_pc = per_class
            diff_col = shown_pc.columns[-1] if len(recorded) >= 2 else None
            formats = {c: pct for c in recorded}
            if diff_col:  # one format() call: a second one resets the first's columns (pandas 3)
                formats[diff_col] = lambda v: "-" if pd.isna(v) else f"{v * 100:+.1f} pp"
            style = shown_pc.style.format(formats, na_rep="-")
            if diff_col:
                style = style.map(diff_style, subset=[diff_col], spread=len(recorded) > 2)
            st.dataframe(style, hide_index=True, key="runs_per_class", placeholder="-")
            if len(recorded) == 2:
                st.caption(f"Difference in percentage points: {recorded[1]} minus {recorded[0]} "
                           f"(green: {recorded[1]} is better on that class).")
            elif len(recorded) > 2:
                st.caption("Difference: best minus worst run on that class (the spread).")
        if result["per_class_missing"]:
            missing = ", ".join(result["per_class_missing"])
            st.info(f"Per-class accuracy not recorded for {missing}"
                    " (runs trained before FaceLab recorded it, or with no finished epoch); the "
                    "Evaluate page computes it.")
    with right:
        settings = result["settings"]
        if several:
            st.subheader("Settings that differ")
            if settings.empty:
                st.success("Same settings: only the names and run folders differ.")
            else:
                st.dataframe(settings, hide_index=True, key="runs_settings")
        else:
            st.subheader("Settings")
            st.dataframe(settings, hide_index=True, key="runs_settings", height=400)
