"""The Evaluate page's tabs (imported by pages/evaluate.py; not a page itself: the router lists
its pages explicitly).

Each function renders one tab from the evaluation report; whatever costs more than a few
milliseconds is cached on the report's key (``key``: the model's version and the folders), so a
plain rerun (a slider, a selection) recomputes nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import altair as alt
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core import evaluation as ev
from core.evaluate import report_crops
from core.report import image_data_uri

MANY_CLASSES = 20     # above this the matrix shows the most confused classes first
MAX_SELECTED = 40     # faces shown for a selection on the map
METRICS = ("accuracy", "precision", "recall", "f1")


@st.cache_data(max_entries=64, show_spinner=False)
def crops_of(key: tuple, files: tuple, _report: dict) -> list:
    return report_crops(_report, list(files))


@st.cache_data(max_entries=16, show_spinner=False)
def matrix_view(key: tuple, top: int | None, normalise: bool, among: tuple | None,
                _report: dict) -> dict:
    """The (reordered, cut, filtered) matrix; cached so a rerun does not redo the ordering."""
    classes = _report["classes"]
    if top is None and among is None:
        matrix = ev.normalise_rows(_report["confusion"]).round(3).tolist() if normalise \
            else _report["confusion"]
        return {"classes": classes, "matrix": matrix}
    return ev.reorder_confusion(_report["confusion"], classes, top=top, normalise=normalise,
                                among=among)


# The face in a map point's tooltip; smaller on big maps, where every point carries one (3,000
# points at 48 px are about 6 MB of chart data; Streamlit sends an unchanged chart only once).
MAP_THUMB_SIDE, MAP_THUMB_SIDE_MANY, MANY_POINTS = 80, 48, 1000


@st.cache_data(max_entries=8, show_spinner="Drawing the map's faces...")
def map_frame(key: tuple, _report: dict) -> pd.DataFrame:
    """One row per map point, with its face as a small JPEG data URI for the hover tooltip
    (the tooltip shows a field named "image" as a picture)."""
    points = pd.DataFrame(ev.map_points(_report))
    points["result"] = points["correct"].map({True: "right", False: "error"})
    points["confidence"] = points["confidence"].astype(float)
    if "file" not in points:
        points["file"] = ""
    crops = report_crops(_report, points["file"].tolist()) if points["file"].any() else []
    side = MAP_THUMB_SIDE if len(points) <= MANY_POINTS else MAP_THUMB_SIDE_MANY
    points["image"] = [None if crop is None else image_data_uri(crop, side, "JPEG")
                       for crop in crops] if len(crops) else None
    return points


def map_chart(points: pd.DataFrame) -> alt.Chart:
    """The t-SNE scatter: colour = true class, a cross = an error; hovering shows the face;
    a click picks a point (shift-click adds more), dragging draws a box."""
    pick = alt.selection_point(name="pick", fields=["index"], on="click")
    box = alt.selection_interval(name="box")
    legend = alt.Legend(title="true class") if points["true"].nunique() <= 40 else None
    tooltip = [alt.Tooltip("file:N"), alt.Tooltip("true:N"), alt.Tooltip("predicted:N"),
               alt.Tooltip("confidence:Q", format=".3f")]
    if points["image"].notna().any():
        tooltip.append(alt.Tooltip("image:N", title="image"))
    return (alt.Chart(points)
            .mark_point(size=70, filled=True, opacity=0.85)
            .encode(x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None),
                    color=alt.Color("true:N", legend=legend),
                    shape=alt.Shape("result:N", title="result",
                                    scale=alt.Scale(domain=["right", "error"],
                                                    range=["circle", "cross"])),
                    tooltip=tooltip)
            .add_params(pick, box)
            .properties(height=600))


def map_selection(event, points: pd.DataFrame) -> list[int]:
    """The ``index`` of every point picked (clicks) or inside the dragged box."""
    selection = getattr(event, "selection", None) or {}
    chosen = [int(p["index"]) for p in selection.get("pick") or [] if "index" in p]
    box = selection.get("box") or {}
    if box.get("x") and box.get("y"):
        (x0, x1), (y0, y1) = sorted(box["x"]), sorted(box["y"])
        inside = points["x"].between(x0, x1) & points["y"].between(y0, y1)
        chosen += points.loc[inside, "index"].astype(int).tolist()
    return list(dict.fromkeys(chosen))


def faces(column, crops: list, captions: list[str], per_row: int = 4) -> None:
    shown = [(c, t) for c, t in zip(crops, captions) if c is not None]
    if len(shown) < len(crops):
        column.caption(f"{len(crops) - len(shown)} face(s) are no longer in the crop cache.")
    for start in range(0, len(shown), per_row):
        cells = column.columns(per_row)
        for cell, (crop, caption) in zip(cells, shown[start:start + per_row]):
            cell.image(crop, caption=caption, width="stretch")


def _conf(value: float | None) -> str:
    return "" if value is None else f"{value:.2f} · "


def _short(file: str, keep: int = 14) -> str:
    """A file name short enough for a caption under a thumbnail (scraped names are long)."""
    name = Path(file).name
    return name if len(name) <= 2 * keep + 1 else f"{name[:keep]}…{name[-keep:]}"


def confusion_tab(report: dict, key: tuple, among: Sequence[int] | None) -> None:
    classes = report["classes"]
    normalise = st.radio("Values", ["counts", "row-normalised"], horizontal=True) == "row-normalised"
    shown = len(classes) if among is None else len(among)
    top = None
    if shown > MANY_CLASSES:
        top = st.slider("Classes shown, most confused first", 5, len(classes), MANY_CLASSES)
    view = matrix_view(key, top, normalise, None if among is None else tuple(among), report)
    if among is not None:
        st.caption(f"{len(among)} class(es) match the search; shown with the classes they are "
                   "confused with.")
    heat = go.Figure(go.Heatmap(z=view["matrix"], x=view["classes"], y=view["classes"],
                                colorscale="Blues",
                                texttemplate="%{z}" if len(view["classes"]) <= 30 else None,
                                hovertemplate="true %{y}<br>predicted %{x}<br>%{z}<extra></extra>"))
    heat.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed",
                       height=max(400, 28 * len(view["classes"]) + 150), margin=dict(t=20))
    st.plotly_chart(heat, width="stretch")


def per_class_tab(report: dict, among: Sequence[int] | None) -> None:
    table = pd.DataFrame(report["per_class"])
    if among is not None:
        table = table.iloc[list(among)]
    st.dataframe(table, hide_index=True, column_config={
        c: st.column_config.NumberColumn(format="%.3f") for c in METRICS})
    metric = st.selectbox("Bar chart of", [*METRICS, "support"])
    ordered = table.sort_values(metric, na_position="first")
    st.plotly_chart(px.bar(ordered, x=metric, y="class", orientation="h",
                           height=max(300, 22 * len(table) + 100)), width="stretch")


def error_review_tab(report: dict, key: tuple, among: Sequence[int] | None) -> None:
    pairs = report["confused_pairs"]
    if among is not None:
        names = {report["classes"][i] for i in among}
        pairs = [p for p in pairs if p["true"] in names or p["predicted"] in names]
    if not pairs:
        if report["confused_pairs"]:
            st.info("No confused pair involves the classes that match the search.")
        else:
            st.success("No errors: every face was classified right.")
        return
    st.caption("Confused pairs (true -> predicted), most frequent first. Select a row to see "
               "those faces next to examples of the class they were taken for.")
    event = st.dataframe(pd.DataFrame(pairs), hide_index=True, on_select="rerun",
                         selection_mode="single-row", key="pairs",
                         height=min(400, 35 * (len(pairs) + 1) + 3))
    rows = [r for r in (event.selection.rows if event is not None else []) if r < len(pairs)]
    if not rows:
        st.caption("Showing the most frequent pair; select another row to change it.")
    pair = pairs[rows[0] if rows else 0]
    errors = ev.pair_errors(report, pair["true"], pair["predicted"])
    examples = ev.class_examples(report, pair["predicted"], k=8)
    left, right = st.columns(2)
    left.markdown(f"**{pair['true']}** taken for **{pair['predicted']}** ({len(errors)})")
    files = tuple(e["file"] for e in errors)
    faces(left, crops_of(key, files, report),
          [f"{_conf(e['confidence'])}{_short(e['file'])}" for e in errors])
    right.markdown(f"Examples of **{pair['predicted']}** (correctly classified)")
    if not examples:
        right.caption("No correctly classified face of this class.")
    files = tuple(e["file"] for e in examples)
    faces(right, crops_of(key, files, report),
          [f"{_conf(e['confidence'])}{_short(e['file'])}" for e in examples])


def map_tab(report: dict, key: tuple) -> None:
    """t-SNE map: hovering a point shows its face; the faces of the points picked or boxed are
    shown under the map, errors first."""
    points = map_frame(key, report)
    st.caption("Each point is a face; a cross marks an error. Hover a point to see the face; "
               "click points (shift-click for more) or drag a box to see those faces below.")
    event = st.altair_chart(map_chart(points), width="stretch", key="map", on_select="rerun")
    chosen = map_selection(event, points)
    if not chosen:
        st.info("Select points on the map to see their faces here.")
        return
    selected = ev.map_points(report, chosen)
    errors = [p for p in selected if not p["correct"]]
    right = [p for p in selected if p["correct"]]
    st.markdown(f"**{len(selected)} face(s) selected**: {len(errors)} error(s), {len(right)} right"
                + (f"; the first {MAX_SELECTED} are shown." if len(selected) > MAX_SELECTED else "."))
    errors, right = errors[:MAX_SELECTED], right[:max(0, MAX_SELECTED - len(errors))]
    if errors:
        st.markdown(":red[**Errors**] (true → predicted, confidence)")
        faces(st, crops_of(key, tuple(p["file"] for p in errors), report),
              [f"✗ {p['true']} → {p['predicted']} {_conf(p['confidence'])}{_short(p['file'])}"
               for p in errors], per_row=6)
    if right:
        st.markdown(":green[**Right**] (class, confidence)")
        faces(st, crops_of(key, tuple(p["file"] for p in right), report),
              [f"✓ {p['true']} {_conf(p['confidence'])}{_short(p['file'])}" for p in right],
              per_row=6)
