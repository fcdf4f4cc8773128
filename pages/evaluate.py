"""Evaluate page: a run (or the reference gender model, or the session's gallery) on a labelled
folder -> metric cards, confusion matrix, per-class table, error review, ROC, exports.

Widgets -> core.evaluate.evaluate_run (cached on the model's version and the folders) -> render.
Threshold sliders recompute from the scores kept in the report (core.evaluation), never re-run
the model; the error review reads the faces from the crop cache (core.evaluate.report_crops).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core import evaluation as ev
from core.evaluate import EvaluationError, evaluate_run, report_crops
from core.gallery import Gallery, GalleryError
from core.report import html_report, to_csv
from core.runs import list_runs

GALLERY_KEY = "facelab_gallery"   # the Predict page's session gallery
GALLERY = "gallery"
GENDER = "reference:gender"
PARAMS = "evaluate_params"        # session_state: what the last "Evaluate" click asked for
MANY_CLASSES = 20                 # above this the matrix shows the most confused classes first
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


@st.cache_data(max_entries=64, show_spinner=False)
def crops_of(key: tuple, files: tuple, _report: dict) -> list:
    return report_crops(_report, list(files))


@st.cache_data(max_entries=4, show_spinner="Writing the report...")
def report_html(key: tuple, _report: dict) -> str:
    files = tuple(e["file"] for e in _report.get("misclassified", [])[:60])
    return html_report(_report, error_crops=dict(zip(files, crops_of(key, files, _report))))


def _version(spec: str, gallery: Gallery | None) -> Any:
    if spec == GALLERY:
        return hashlib.sha1(gallery.to_bytes()).hexdigest()
    checkpoint = Path(spec) / "checkpoint.pt"
    return checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _faces(column, crops: list, captions: list[str], per_row: int = 4) -> None:
    shown = [(c, t) for c, t in zip(crops, captions) if c is not None]
    if len(shown) < len(crops):
        column.caption(f"{len(crops) - len(shown)} face(s) are no longer in the crop cache.")
    for start in range(0, len(shown), per_row):
        cells = column.columns(per_row)
        for cell, (crop, caption) in zip(cells, shown[start:start + per_row]):
            cell.image(crop, caption=caption, width="stretch")


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


with st.form("evaluate"):
    left, right = st.columns(2)
    spec = left.selectbox("Model", options, format_func=_label,
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
try:
    report = evaluate(*key, _model=model)
except (EvaluationError, GalleryError, FileNotFoundError, ValueError) as exc:
    st.error(str(exc))
    st.stop()

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
    normalise = st.radio("Values", ["counts", "row-normalised"], horizontal=True) == "row-normalised"
    top = None
    if len(classes) > MANY_CLASSES:
        top = st.slider("Classes shown, most confused first", 5, len(classes), MANY_CLASSES)
    view = ev.reorder_confusion(report["confusion"], classes, top=top, normalise=normalise) if top \
        else {"classes": classes, "matrix": (ev.normalise_rows(report["confusion"]).round(3).tolist()
                                             if normalise else report["confusion"])}
    heat = go.Figure(go.Heatmap(z=view["matrix"], x=view["classes"], y=view["classes"],
                                colorscale="Blues", texttemplate="%{z}" if len(view["classes"]) <= 30 else None,
                                hovertemplate="true %{y}<br>predicted %{x}<br>%{z}<extra></extra>"))
    heat.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                       height=max(400, 28 * len(view["classes"]) + 150), margin=dict(t=20))
    st.plotly_chart(heat, width="stretch")

with tabs["Per class"]:
    table = pd.DataFrame(report["per_class"])
    st.dataframe(table, hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.3f") for c in ("accuracy", "precision", "recall", "f1")})
    metric = st.selectbox("Bar chart of", ["accuracy", "precision", "recall", "f1", "support"])
    ordered = table.sort_values(metric, na_position="first")
    st.plotly_chart(px.bar(ordered, x=metric, y="class", orientation="h",
                           height=max(300, 22 * len(table) + 100)), width="stretch")

with tabs["Error review"]:
    pairs = report["confused_pairs"]
    if not pairs:
        st.success("No errors: every face was classified right.")
    else:
        st.caption("Confused pairs (true -> predicted), most frequent first. Select a row to see "
                   "those faces next to examples of the class they were taken for.")
        event = st.dataframe(pd.DataFrame(pairs), hide_index=True, on_select="rerun",
                             selection_mode="single-row", key="pairs", height=min(400, 35 * (len(pairs) + 1) + 3))
        rows = event.selection.rows if event is not None else []
        if not rows:
            st.caption("Showing the most frequent pair; select another row to change it.")
        pair = pairs[rows[0] if rows else 0]
        errors = ev.pair_errors(report, pair["true"], pair["predicted"])
        examples = ev.class_examples(report, pair["predicted"], k=8)
        left, right = st.columns(2)
        left.markdown(f"**{pair['true']}** taken for **{pair['predicted']}** ({len(errors)})")
        files = tuple(e["file"] for e in errors)
        _faces(left, crops_of(key, files, report),
               [f"{e['confidence']:.2f} · {Path(e['file']).name}" if e["confidence"] is not None
                else Path(e["file"]).name for e in errors])
        right.markdown(f"Examples of **{pair['predicted']}** (correctly classified)")
        if not examples:
            right.caption("No correctly classified face of this class.")
        files = tuple(e["file"] for e in examples)
        _faces(right, crops_of(key, files, report),
               [f"{e['confidence']:.2f} · {Path(e['file']).name}" for e in examples])

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
        points = pd.DataFrame(report["embedding_map"])
        points["result"] = points["correct"].map({True: "right", False: "error"})
        st.plotly_chart(px.scatter(points, x="x", y="y", color="true", symbol="result",
                                   symbol_map={"right": "circle", "error": "x"},
                                   hover_data=["file", "predicted"], height=600), width="stretch")

with tabs["Export"]:
    stem = f"facelab-{report['run']}".replace("/", "_").replace(":", "_")
    st.download_button("Per-face predictions (CSV)", to_csv(report.get("predictions", [])),
                       file_name=f"{stem}-predictions.csv", mime="text/csv")
    st.download_button("HTML report (self-contained)", report_html(key, report),
                       file_name=f"{stem}-report.html", mime="text/html")
    st.caption(f"Evaluated in {report['seconds']:.1f} s.")
