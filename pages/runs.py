"""Runs page: every training run in one sortable table; select runs to compare their curves,
per-class accuracy and settings; rename, annotate or delete one; jump to Evaluate or Predict.

Widgets -> core.compare (runs_frame, filter_runs, compare) -> render. Changes go through
core.runs (rename_run, set_note, delete_run), which refuse to touch a running run. The table is
re-read from the runs store on every rerun, so runs started elsewhere (the Train page, another tab,
the command line) appear here, and a run whose process died shows as "interrupted".
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages._routing import run_through_router

run_through_router()  # before the heavy imports: a deep link on a fresh server

from core.compare import (STATUS_COLOURS, STATUS_HELP, compare, evaluation_folder, filter_runs,
                          runs_frame, runs_signature)
from core.runs import RunError, default_runs_root, list_runs, load_run
from pages import _runs_views as views  # callbacks, styles, the comparison (not a page)
from pages._runs_views import CONFIRM, SELECTED, TABLE_ROWS, TABLE_VERSION

# Display order: who and how good first (visible without scrolling), then how it was trained.
TABLE_COLUMNS = {"name": "Run", "status": "Status", "val_acc": "Val acc", "val_loss": "Val loss",
                 "test_acc": "Test acc", "dataset": "Dataset", "task": "Task",
                 "arch": "Architecture", "epochs": "Epochs", "image_size": "Image size",
                 "lr": "LR", "batch_size": "Batch", "pretrained": "Pretrained",
                 "augment": "Augment", "balance": "Balance", "freeze": "Freeze",
                 "duration_min": "Minutes", "device": "Device", "world_size": "GPUs/procs",
                 "created": "Created", "note": "Note"}


# -- the table -------------------------------------------------------------------------------------

st.title("Runs")
st.caption("Every training run: filter and sort the table, tick runs to compare them or to "
           "rename, annotate, delete, evaluate or use one.")

ROOT = default_runs_root()
try:
    every_run = list_runs(ROOT)
    shown_signature = runs_signature(runs=every_run)
    table = runs_frame(runs=every_run)
except OSError as exc:
    st.error(f"The runs folder {ROOT} cannot be read: {exc}")
    st.stop()
if table.empty:
    views.show_flash()
    st.info(f"No runs yet in {ROOT}. Train one on the Train page.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

counts = table["status"].value_counts()
with st.container(horizontal=True):
    for status in STATUS_HELP:
        if counts.get(status):
            st.badge(f"{status}: {counts[status]}", color=STATUS_COLOURS[status],
                     help=STATUS_HELP[status])
if counts.get("running"):
    views.refresh_while_training(ROOT, shown_signature)
    st.caption(f"A run is training: this page redraws itself when it moves on (checked every "
               f"{views.REFRESH_SECONDS} s).")
if counts.get("interrupted"):
    st.info("**Interrupted** means the run was recorded as running but its training process is "
            "gone: the server or the machine was stopped or killed mid-run. Its last good "
            "checkpoint is still loadable, so it can be evaluated or used on Predict; to train "
            "further, start a new run.")

filters = st.columns([1, 1, 1, 1, 1.4])
options = lambda column: sorted(table[column].dropna().unique().tolist())  # noqa: E731
status_f = filters[0].multiselect("Status", options("status"), placeholder="all")
task_f = filters[1].multiselect("Task", options("task"), placeholder="all")
arch_f = filters[2].multiselect("Architecture", options("arch"), placeholder="all")
data_f = filters[3].multiselect("Dataset", options("dataset"), placeholder="all")
search = filters[4].text_input("Search name or note", placeholder="e.g. r18")
shown = filter_runs(table, status=status_f, task=task_f, arch=arch_f, dataset=data_f,
                    search=search)

names_all = table["name"].tolist()
selected = [n for n in st.session_state.get(SELECTED, []) if n in names_all]
st.session_state[SELECTED] = selected
view = shown[list(TABLE_COLUMNS)]
styled = (view.style.map(views.status_style, subset=["status"])
          .format({"val_acc": views.pct, "test_acc": views.pct, "val_loss": "{:.3f}", "lr": "{:g}",
                   "duration_min": "{:.1f}", "created": lambda t: t.strftime("%Y-%m-%d %H:%M")},
                  na_rep="-"))
table_key = f"runs_table_{st.session_state.get(TABLE_VERSION, 0)}"
names_shown = shown["name"].tolist()
st.session_state[TABLE_ROWS] = (table_key, names_shown)
st.dataframe(styled, key=table_key, hide_index=True, on_select=views.on_table_select,
             selection_mode="multi-row", placeholder="-",
             selection_default={"selection": {"rows": [names_shown.index(n) for n in selected
                                                       if n in names_shown]}},
             column_config={k: st.column_config.Column(v, pinned=k == "name")
                            for k, v in TABLE_COLUMNS.items()})
if len(shown) < len(table):
    st.caption(f"{len(shown)} of {len(table)} runs match the filters.")

selected = st.multiselect("Selected runs", names_all, key=SELECTED, on_change=views.bump_table,
                          placeholder="tick rows in the table, or choose runs here",
                          help="Two or more: compared below. One: its details and actions.")
if not selected:
    views.show_flash()
    st.info("Select runs (tick the boxes at the left of the table) to compare them, or one run "
            "to rename, annotate, delete, evaluate or use it.")
    st.stop()

# -- compare ---------------------------------------------------------------------------------------

# Oldest first, so a difference reads "newer run minus its baseline" whatever the ticking order.
created = dict(zip(table["name"], table["created"]))
ordered = sorted(selected, key=lambda n: (1, "") if pd.isna(created.get(n)) else
                 (0, created[n].isoformat()))
try:
    result = compare(ordered, ROOT)
except RunError as exc:
    st.error(str(exc))
    st.stop()

views.render_compare(result, ordered)

# -- manage one run ----------------------------------------------------------------------------------

st.header("Manage")
views.show_flash()
target = (ordered[0] if len(ordered) == 1 else
          st.selectbox("Run to manage", ordered, key="runs_target"))
record = next(r for r in result["runs"] if r["name"] == target)
run = load_run(target, ROOT)
status = record["status"]
st.badge(status, color=STATUS_COLOURS.get(status, "gray"), help=STATUS_HELP.get(status))
st.caption(f"{target}: {STATUS_HELP.get(status, status)}. Folder: {record['path']}")
if status == "interrupted":
    st.warning("This run's training process is gone (the server or the machine stopped while it "
               "trained). Nothing is lost that was saved: its last good checkpoint"
               + (f" (best epoch {record['best_epoch']})" if record["best_epoch"] else "") +
               " is still loadable. To train further, start a new run.")
if record["error"] and status in ("failed", "damaged"):
    st.error(record["error"])
cards = st.columns(4)
cards[0].metric("Val accuracy", views.pct(record["val_acc"]))
cards[1].metric("Val loss", "-" if record["val_loss"] is None else f"{record['val_loss']:.3f}")
cards[2].metric("Test accuracy", views.pct(record["test_acc"]))
cards[3].metric("Duration", "-" if record["duration_min"] is None
                else f"{record['duration_min']:.1f} min")

if run.checkpoint_path.is_file():
    links = st.columns(3)
    folder = evaluation_folder(run) or ""
    links[0].page_link("pages/evaluate.py", label=f"Evaluate {target}", icon=":material/analytics:",
                       query_params={"run": target, "data": folder})
    links[1].page_link("pages/predict.py", label=f"Use {target} on Predict",
                       icon=":material/person_search:", query_params={"run": target, "data": folder})
    if status == "running":
        links[2].page_link("pages/train.py", label="Watch it on Train",
                           icon=":material/model_training:")
elif status == "running":
    st.page_link("pages/train.py", label="Watch it on Train", icon=":material/model_training:")
else:
    st.caption("No checkpoint was saved (no epoch finished), so it cannot be evaluated or used.")

edit = st.columns(2)
with edit[0]:
    st.text_input("New name", value=target, key=f"rename_{target}",
                  help="Letters, digits, '.', '_' and '-'; a running run cannot be renamed.")
    st.button("Rename", key=f"do_rename_{target}", on_click=views.rename, args=(target, ROOT))
with edit[1]:
    st.text_area("Note", value=record["note"] or "", key=f"note_{target}", height=80)
    st.button("Save note", key=f"do_note_{target}", on_click=views.save_note, args=(target, ROOT))

if st.session_state.get(CONFIRM) == target:
    st.warning(f"Delete run **{target}** for good? Its folder (checkpoints, history, notes) is "
               f"removed and cannot be restored.")
    yes, no = st.columns([1, 6])
    yes.button(f"Yes, delete {target}", key="do_delete", type="primary", on_click=views.delete,
               args=(target, ROOT))
    no.button("Cancel", key="cancel_delete", on_click=lambda: st.session_state.pop(CONFIRM, None))
else:
    st.button("Delete run...", key=f"ask_delete_{target}", on_click=views.ask_delete,
              args=(target, ROOT),
              help="Asks for confirmation; a running run is never deleted.")
