"""Evaluate page: a run (or the reference gender model, or the session's gallery) on a labelled
folder -> metric cards, confusion matrix, per-class table, error review, ROC, exports.

Widgets -> core.evaluate.evaluate_run (cached on the model's version and the folders) -> render.
Threshold sliders recompute from the scores kept in the report (core.evaluation), never re-run
the model; the error review and the map read the faces from the crop cache
(core.evaluate.report_crops). The tabs are drawn by pages/_evaluate_views.py. The report is kept
in session_state for its key, so a plain rerun neither re-runs nor re-reads it; a class search
narrows the table, the matrix and the confused pairs. ``?run=NAME&data=FOLDER`` in the URL
preselects the run and prefills the folder (the Train and Runs pages link here with them).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from pages._routing import run_through_router

run_through_router()  # before the heavy imports: a deep link on a fresh server


from core import evaluation as ev
from core.evaluate import EvaluationError, evaluate_run
from core.gallery import Gallery, GalleryError
from core.report import html_report, to_csv
from core.runs import list_runs
from pages import _evaluate_views as views  # the tabs (pages/_evaluate_views.py: not a page)

GALLERY_KEY = "facelab_gallery"   # the Predict page's session gallery
GALLERY = "gallery"
GENDER = "reference:gender"
PARAMS = "evaluate_params"        # session_state: what the last "Evaluate" click asked for
REPORT = "evaluate_report"        # session_state: (key, report) of the report on show
LINKED = "evaluate_linked"        # session_state: the URL parameters already applied
STAGES = {"prepare": "Finding and cropping faces", "embed": "Embedding faces",
          "predict": "Running the model"}


@st.cache_data(max_entries=8, show_spinner=False)
def evaluate(spec: str, version: Any, data_dir: str, unknown_dir: str | None, with_map: bool,
             _model: Any) -> dict:
    """The evaluation report; ``version`` (checkpoint time / gallery hash) keys the cache."""
    # The bar is created (and emptied) inside: a cached function may not draw into blocks made
    # outside it, since its elements are replayed on a cache hit.
    bar = st.empty()

    def progress(stage: str, done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{STAGES.get(stage, stage)}: {done}/{total}")

    try:
        return evaluate_run(_model, data_dir, unknown_dir=unknown_dir or None,
                            embedding_map=with_map, callback=progress)
    finally:
        bar.empty()


@st.cache_data(max_entries=4, show_spinner="Writing the report...")
def report_html(key: tuple, _report: dict) -> str:
    files = tuple(e["file"] for e in _report.get("misclassified", [])[:60])
    return html_report(_report, error_crops=dict(zip(files, views.crops_of(key, files, _report))))


def _version(spec: str, gallery: Gallery | None) -> Any:
    if spec == GALLERY:
        return hashlib.sha1(gallery.to_bytes()).hexdigest()
    checkpoint = Path(spec) / "checkpoint.pt"
    return checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def linked_run(wanted: str | None, runs: dict) -> str | None:
    """The spec of the run named by the URL's ``?run=`` (its name, folder name or path)."""
    if not wanted:
        return None
    if wanted == GENDER:
        return GENDER
    return next((spec for spec, run in runs.items() if wanted in (run.name, run.path.name, spec)), None)


def _held_out(folder: str) -> str:
    """A dataset root linked from Train holds split folders: evaluate on its held-out split."""
    root = Path(folder).expanduser()
    return next((str(root / s) for s in ("test", "val", "validation", "valid") if (root / s).is_dir()),
                folder)


st.title("Evaluate")
st.caption("Accuracy, confusion matrix, per-class table and error review of a model on a folder "
           "of labelled photos (one folder per class).")

gallery: Gallery | None = st.session_state.get(GALLERY_KEY)
runs = {str(r.path): r for r in list_runs() if r.checkpoint_path.exists()}
options = [*runs, GENDER] + ([GALLERY] if gallery is not None and len(gallery) >= 2 else [])


def _label(spec: str) -> str:
    if spec == GENDER:
        return "reference:gender (bundled gender model)"
    if spec == GALLERY:
        return f"gallery of this session ({len(gallery)} people, dlib face embedder)"
    run = runs[spec]
    return f"{run.name} ({run.arch}, {run.task}, {len(run.classes)} classes, {run.status})"


# The URL's ?run= and ?data= (links from Train and Runs): applied once per distinct link, so
# the user can still edit the folder afterwards.
wanted, wanted_data = st.query_params.get("run"), st.query_params.get("data")
linked = linked_run(wanted, runs)
if wanted and linked is None:
    st.warning(f"The run {wanted!r} from the link is not among the runs with a checkpoint; "
               "choose a model below.")
if st.session_state.get(LINKED) != (wanted, wanted_data):
    st.session_state[LINKED] = (wanted, wanted_data)
    if wanted_data:
        st.session_state["data_dir"] = _held_out(wanted_data)

with st.form("evaluate"):
    left, right = st.columns(2)
    spec = left.selectbox("Model", options, format_func=_label,
                          index=options.index(linked) if linked in options else 0,
                          help="Trained runs (weights/), the reference gender model, or the "
                               "gallery enrolled on the Predict page (2+ people).")
    data_dir = right.text_input("Labelled folder", key="data_dir",
                                placeholder="/path/to/val  (holding <class>/*.jpg)",
                                help="Folder names are matched to the model's classes; for gender "
                                     "use male/ and female/.")
    with st.expander("More"):
        unknown_dir = st.text_input("Photos of unknown people (open set; galleries and embedding runs)",
                                    key="unknown_dir", placeholder="/path/to/strangers")
        with_map = st.checkbox("2-D map of the features (t-SNE; slower)")
    if st.form_submit_button("Evaluate", type="primary"):
        if not data_dir.strip():
            st.error("Give the labelled folder to evaluate on.")
        else:
            st.session_state[PARAMS] = (spec, data_dir.strip(), unknown_dir.strip(), with_map)

params = st.session_state.get(PARAMS)
if not params or params[0] not in options:
    st.info("Choose a model and a labelled folder (one folder per class, e.g. "
            "five_celeb/val or utkface_gender), then press Evaluate. Faces are detected once and "
            "cached, so a second evaluation of the same photos is quick.")
    st.stop()

spec, data_dir, unknown_dir, with_map = params
model = gallery if spec == GALLERY else spec
key = (spec, _version(spec, gallery), data_dir, unknown_dir, with_map)
held = st.session_state.get(REPORT)
if held is not None and held[0] == key:
    report = held[1]   # a plain rerun: no model, no unpickling of a cached copy
    # The slot evaluate()'s progress bar takes: with the same elements above them, the tabs
    # below keep their identity, so the tab the user is on stays open across reruns.
    st.empty()
else:
    try:
        report = evaluate(*key, _model=model)
    except (EvaluationError, GalleryError, FileNotFoundError, ValueError) as exc:
        st.error(str(exc))
        st.stop()
    st.session_state[REPORT] = (key, report)

classes = report["classes"]
st.subheader(f"{report['run']} on {report['data_dir']}")
if report["unknown_classes"]:
    st.warning("Folders that match no class of the model were left out: " +
               ", ".join(f"{u['class']} ({u['n']} photos)" for u in report["unknown_classes"]))
if report["missing_classes"]:
    st.info("Classes of the model with no folder here: " + ", ".join(report["missing_classes"]))
if report["no_face"]:
    st.info(f"{len(report['no_face'])} photo(s) had no face found; the whole image was used.")
if report["errors"]:
    st.warning(f"{len(report['errors'])} photo(s) could not be read and were left out: " +
               "; ".join(f"{e['file']}: {e['error']}" for e in report["errors"][:5]))

cards = st.columns(4)
cards[0].metric("Accuracy", _pct(report["accuracy"]))
cards[1].metric("Top-5 accuracy", _pct(report.get("top5_accuracy")),
                help=None if "top5_accuracy" in report else "Only with more than 5 classes.")
cards[2].metric("Macro F1", f"{report['macro_f1']:.3f}")
cards[3].metric("Faces (n)", report["n"])

among = None  # class indices matching the search (None: every class)
if len(classes) > 2:
    search = st.text_input("Find classes", key="class_search", placeholder="part of a class name",
                           help="Narrows the per-class table, the matrix and the confused pairs.")
    if search.strip():
        among = ev.matching_classes(classes, search)
        if not among:
            st.warning(f"No class name contains {search.strip()!r}; showing every class.")
            among = None

tab_names = ["Confusion matrix", "Per class", "Error review"]
if "binary" in report:
    tab_names.append("Gender ROC")
if "open_set" in report:
    tab_names.append("Open set")
if "embedding_map" in report:
    tab_names.append("Map")
tab_names.append("Export")
tabs = dict(zip(tab_names, st.tabs(tab_names)))

with tabs["Confusion matrix"]:
    views.confusion_tab(report, key, among)
with tabs["Per class"]:
    views.per_class_tab(report, among)
with tabs["Error review"]:
    views.error_review_tab(report, key, among)

if "Gender ROC" in tabs:
    with tabs["Gender ROC"]:
        binary = report["binary"]
        scores = binary["scores"]
        t = st.slider(f"Threshold: predict {binary['positive']} when its probability is at least",
                      0.0, 1.0, 0.5, 0.01)
        at = ev.binary_report(scores["y_true"], scores["prob_positive"], classes=binary["classes"],
                              threshold=t, groups=scores["groups"] or None)
        cols = st.columns(4)
        cols[0].metric("ROC AUC", f"{binary['roc_auc']:.3f}" if binary["roc_auc"] is not None else "n/a")
        cols[1].metric("Accuracy at threshold", _pct(at["accuracy"]))
        cols[2].metric("TPR", _pct(at["tpr"]))
        cols[3].metric("FPR", _pct(at["fpr"]))
        if binary["roc"]:
            roc = go.Figure(go.Scatter(x=binary["roc"]["fpr"], y=binary["roc"]["tpr"], mode="lines",
                                       name="ROC", customdata=binary["roc"]["thresholds"],
                                       hovertemplate="FPR %{x:.3f}<br>TPR %{y:.3f}<br>threshold %{customdata:.3f}"))
            if at["fpr"] is not None and at["tpr"] is not None:
                roc.add_trace(go.Scatter(x=[at["fpr"]], y=[at["tpr"]], mode="markers", name=f"threshold {t:.2f}",
                                         marker=dict(size=12, color="red")))
            roc.update_layout(xaxis_title="false positive rate", yaxis_title="true positive rate",
                              height=420, margin=dict(t=20))
            st.plotly_chart(roc, width="stretch")
        if at["subgroups"]:
            st.markdown("**Accuracy by subgroup** at this threshold")
            for attribute, groups in at["subgroups"].items():
                frame = pd.DataFrame(groups)
                a, b = st.columns([2, 3])
                a.dataframe(frame, hide_index=True)
                b.plotly_chart(px.bar(frame, x="group", y="accuracy", title=attribute, height=280,
                                      range_y=[0, 1]), width="stretch")
        else:
            st.caption("No subgroup information in these file names (UTKFace names carry age and race).")

if "Open set" in tabs:
    with tabs["Open set"]:
        open_set = report["open_set"]
        cols = st.columns(4)
        cols[0].metric("EER", _pct(open_set["eer"]))
        cols[1].metric("TAR @ FAR 1%", _pct(open_set["tar_at_far_1e-2"]))
        cols[2].metric("Threshold @ FAR 1%", f"{open_set['threshold_at_far_1e-2']:.3f}")
        cols[3].metric("Rank-1 accuracy", _pct(open_set["rank1_accuracy"]))
        s = open_set["scores"]
        t = st.slider("Similarity threshold", -1.0, 1.0, float(open_set["at_threshold"]["threshold"]), 0.01)
        now = ev.open_set_at_threshold(s["genuine"], s["genuine_correct"], s["impostor"], t)
        st.caption(f"At {t:.2f}: TAR {_pct(now['tar'])}, FAR {_pct(now['far'])}, open-set accuracy "
                   f"{_pct(now['accuracy'])}, {now['misidentified']} misidentified. Gallery: "
                   f"{open_set.get('gallery_source')}; {open_set['n_genuine']} known and "
                   f"{open_set['n_impostor']} unknown faces.")
        roc = go.Figure(go.Scatter(x=open_set["roc"]["far"], y=open_set["roc"]["tar"], mode="lines",
                                   name="open-set ROC"))
        roc.add_trace(go.Scatter(x=[now["far"]], y=[now["tar"]], mode="markers", name=f"threshold {t:.2f}",
                                 marker=dict(size=12, color="red")))
        roc.update_layout(xaxis_title="false accept rate (unknown people accepted)",
                          yaxis_title="true accept rate (known people, right name)", height=420,
                          margin=dict(t=20))
        st.plotly_chart(roc, width="stretch")
elif spec == GALLERY or getattr(runs.get(spec), "arch", None) == "dlib_face":
    tabs["Error review"].caption("Give a folder of unknown people under More for the open-set "
                                 "ROC, EER and TAR at FAR 1%.")

if "Map" in tabs:
    with tabs["Map"]:
        views.map_tab(report, key)

with tabs["Export"]:
    stem = f"facelab-{report['run']}".replace("/", "_").replace(":", "_")
    st.download_button("Per-face predictions (CSV)", to_csv(report.get("predictions", [])),
                       file_name=f"{stem}-predictions.csv", mime="text/csv")
    st.download_button("HTML report (self-contained)", report_html(key, report),
                       file_name=f"{stem}-report.html", mime="text/html")
    st.caption(f"Evaluated in {report['seconds']:.1f} s.")
