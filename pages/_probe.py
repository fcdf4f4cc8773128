"""The Predict page's behaviour probe panel (imported by pages/predict.py; not a page itself:
the router lists its pages explicitly, and the leading underscore keeps it out of any pages/
folder discovery).

Widgets -> core.probe.sweep / core.gradcam.gradcam (cached per face, model and setting) ->
render: the crop, its perturbed version with the model's answer, the sweep plot and, for CNN
runs, a Grad-CAM overlay of what drove the answer.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from core import probe
from core.detection import Face
from core.gallery import Gallery
from core.gradcam import GradCamUnavailable, gradcam, gradcam_available
from core.images import load_image
from core.predict import crop_faces, crop_settings_of, whole_image_crop

PREDICTED = "the predicted class"


@st.cache_data(max_entries=32, show_spinner=False)
def face_crop(data: bytes, face: dict, model_key: tuple, _model: Any):
    """The face's crop, cut as the model's training crops were."""
    image = load_image(data)
    settings = crop_settings_of(_model)
    return (crop_faces(image, [Face.from_dict(face)], settings) if face.get("keypoints")
            else whole_image_crop(image, settings))[0]


@st.cache_data(max_entries=32, show_spinner=False)
def probe_sweep(crop, model_key: tuple, kind: str, region: str, _model: Any) -> list[dict]:
    """The sweep rows of one perturbation over its range (core.probe)."""
    return probe.sweep(crop, kind, probe.scorer_for(_model), region=region,
                       margin=crop_settings_of(_model).margin)


@st.cache_data(max_entries=32, show_spinner=False)
def explain(crop, model_key: tuple, target: str | None, _model: Any) -> dict:
    """Grad-CAM of the crop for ``target`` (None: the predicted class)."""
    return gradcam(_model, crop, target)


def _candidates(inputs: list, results: list) -> tuple[list, list[str]]:
    candidates = [(n, d, r["faces"][j]) for (n, d), r in zip(inputs, results) if r.get("faces")
                  for j in range(len(r["faces"]))]
    counts: dict[str, int] = {}
    labels = []
    for n, _, _ in candidates:
        counts[n] = counts.get(n, 0) + 1
        labels.append(f"{n}, face {counts[n]}")
    return candidates, labels


def render(inputs: list, results: list, models: dict, model_key: list) -> None:
    """The probe panel for the page's photos (``inputs`` [(name, bytes)], their ``results``)
    and loaded ``models`` {name: predictor} keyed for caching by ``model_key``."""
    st.divider()
    st.subheader("Behaviour probe")
    candidates, labels = _candidates(inputs, results)
    if not candidates or not models:
        st.info("A photo with a face and a chosen model are needed to probe how the model behaves.")
        return
    left, right = st.columns([1, 2])
    pick = left.selectbox("Face", range(len(candidates)), format_func=lambda i: labels[i])
    probe_model = left.selectbox("Model", list(models))
    kind = left.radio("Perturbation", list(probe.PERTURBATIONS), horizontal=True)
    spec = probe.PERTURBATIONS[kind]
    region = left.selectbox("Patch over", probe.REGIONS) if kind == "occlusion" else "eyes"
    value = left.slider(f"{kind} ({spec.unit})", spec.low, spec.high, spec.identity, spec.step,
                        key=f"probe_{kind}", help=spec.help)
    name, data, face = candidates[pick]
    model = models[probe_model]
    key = next(k for k in model_key if k[0] == probe_model)
    with st.spinner("Probing..."):
        crop = face_crop(data, {k: face[k] for k in ("box", "confidence", "keypoints")}, key, model)
        rows = probe_sweep(crop, key, kind, region, model)
        changed = probe.apply(crop, kind, value, region=region, margin=crop_settings_of(model).margin)
        names, scores = probe.scorer_for(model)(changed[None])
    best = int(scores[0].argmax())
    with left:
        a, b = st.columns(2)
        a.image(crop, caption="original", width=140)
        b.image(changed, caption=f"{names[best]} {float(scores[0][best]):.3f}", width=140)
    _plot(right, rows, kind, spec, value, labels[pick],
          "similarity" if isinstance(model, Gallery) else "probability")
    _gradcam(crop, key, model, probe_model)


def _plot(column, rows: list[dict], kind: str, spec, value: float, label: str, measure: str) -> None:
    frame = pd.DataFrame(rows)
    figure = px.line(frame, x="value", y="ref_prob", markers=True,
                     labels={"value": f"{kind} ({spec.unit})", "ref_prob": measure})
    figure.data[0].name = f"original answer: {rows[0]['ref_label']}"
    figure.data[0].showlegend = True
    tops = px.scatter(frame, x="value", y="prob", color="label", symbol_sequence=["diamond"])
    for trace in tops.data:
        trace.name = f"top label: {trace.name}"
        figure.add_trace(trace)
    figure.add_vline(x=value, line_dash="dash", line_color="grey")
    figure.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10), yaxis_range=[
        min(0.0, float(frame[["prob", "ref_prob"]].min().min())), 1.02], legend_title_text="")
    column.plotly_chart(figure, width="stretch")
    column.caption(f"How the answer for {label} moves as the {spec.help} changes; the dashed "
                   "line is the slider's value.")
    column.dataframe(frame[["value", "label", "prob", "ref_prob"]].rename(
        columns={"label": "top label", "prob": measure, "ref_prob": f"{measure} of {rows[0]['ref_label']}"}),
        hide_index=True, height=200)


def _gradcam(crop, key: tuple, model: Any, model_name: str) -> None:
    st.markdown("**Grad-CAM**: what drove the answer")
    ok, why = gradcam_available(model)
    if not ok:
        st.caption(f"{model_name}: {why}.")
        return
    left, middle, right = st.columns([1, 1, 2])
    target = right.selectbox("Explain the class", [PREDICTED, *model.classes], key="gradcam_target",
                             help="Grad-CAM weighs the last convolutional feature map by how much "
                                  "it raises this class's score.")
    try:
        with st.spinner("Computing Grad-CAM..."):
            result = explain(crop, key, None if target == PREDICTED else target, model)
    except (GradCamUnavailable, ValueError, RuntimeError) as exc:
        st.warning(f"Grad-CAM failed for {model_name}: {exc}")
        return
    left.image(crop, caption="face crop", width=180)
    middle.image(result["overlay"], caption=f"{result['target']} {result['prob']:.3f}", width=180)
    right.caption(f"Red: regions that raised the score of **{result['target']}** most "
                  f"(predicted: {result['predicted']}). Layer: {result['layer']}.")
