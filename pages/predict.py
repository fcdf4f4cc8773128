"""Predict page: photos (or the camera) -> every face boxed and labelled by one or two models.

Widgets -> core.predict.predict_photos (one call per photo, cached on its bytes and the chosen
models) -> render. Models load once per process (st.cache_resource); thresholds are applied to
the cached results, so moving a threshold slider does not re-run detection. A gallery of people
for the pretrained dlib embedder is enrolled here and kept in the session (the Evaluate page can
use it too); the behaviour probe at the bottom (pages/_probe.py) perturbs one face (core.probe)
and shows a Grad-CAM overlay for CNN runs (core.gradcam). ``?run=NAME`` in the URL preselects
that run.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from pages._routing import run_through_router

run_through_router()  # before the heavy imports: a deep link on a fresh server


from core.gallery import DEFAULT_THRESHOLDS, Gallery, GalleryError, enrol_folder, enrol_photos
from core.images import IMAGE_EXTENSIONS, ImageError, load_image
from core.predict import MAX_TOP_K, load_predictor, predict_photos
from core.render import draw_faces, fit_within
from core.report import prediction_rows, recognised, to_csv
from core.runs import list_runs
from pages._probe import render as render_probe  # the probe panel (pages/_probe.py: not a page)

DISPLAY_SIDE = 1600        # longest side of the photo sent to the browser
MAX_FACE_DETAILS = 12      # per-face rows shown under a photo; every face is in the CSV
GALLERY_KEY = "facelab_gallery"   # session_state: the session's Gallery (shared with Evaluate)
GALLERY = "gallery"
GENDER = "reference:gender"
DEFAULT_SIMILARITY = DEFAULT_THRESHOLDS["dlib_face"]  # measured on lfw40: EER threshold


# -- models and cached work ------------------------------------------------------------------------

@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def load_model(spec: str, stamp: int) -> Any:
    # stamp: the checkpoint's mtime, so retraining into the same folder loads the new weights.
    return load_predictor(spec)


def _stamp(spec: str) -> int:
    checkpoint = Path(spec) / "checkpoint.pt"
    return checkpoint.stat().st_mtime_ns if checkpoint.exists() else 0


def gallery_key(gallery: Gallery | None) -> str:
    return hashlib.sha1(gallery.to_bytes()).hexdigest() if gallery is not None and len(gallery) else ""


@st.cache_data(max_entries=64, show_spinner=False)
def analyse(data: bytes, name: str, model_key: tuple, top_k: int, _models: dict) -> dict:
    """Detect and label one photo; a bad file comes back as {"error": message}."""
    try:
        image = load_image(data)
    except ImageError as exc:
        return {"error": str(exc)}
    result = predict_photos([image], _models, top_k=top_k, names=[name], include_crops=True)[0]
    shown = fit_within(image, DISPLAY_SIDE)
    return {"result": result, "image": shown, "scale": shown.shape[1] / image.shape[1]}


def _label(spec: str, runs: dict, gallery: Gallery | None) -> str:
    # No session_state in here: a format_func may be called outside the script run.
    if spec == GALLERY:
        return f"gallery (dlib face embedder, {len(gallery) if gallery else 0} people)"
    if spec == GENDER:
        return "reference:gender (bundled gender model)"
    run = runs[spec]
    return f"{run.name} ({run.arch}, {run.task}, {run.status})"


def _show_name(spec: str, runs: dict) -> str:
    return GALLERY if spec == GALLERY else GENDER if spec == GENDER else runs[spec].name


def linked_run(wanted: str | None, runs: dict) -> str | None:
    """The spec of the run named by the URL's ``?run=`` (its name, folder name or path)."""
    if not wanted:
        return None
    return next((spec for spec, run in runs.items() if wanted in (run.name, run.path.name, spec)), None)


# -- page ------------------------------------------------------------------------------------------

st.title("Predict")
st.caption("Every face boxed with its landmarks and labelled: identity (top-k) and gender, by one "
           "or two models side by side. Enrol people into a gallery to recognise them without "
           "training.")

gallery: Gallery | None = st.session_state.get(GALLERY_KEY)
runs = {str(r.path): r for r in list_runs() if r.checkpoint_path.exists()}

with st.expander("Gallery: enrol people for the pretrained face embedder",
                 expanded=gallery is None or not len(gallery)):
    photos_tab, folder_tab, file_tab = st.tabs(["From photos", "From a server folder", "Save / load"])
    with photos_tab.form("enrol_photos", clear_on_submit=True):
        person = st.text_input("Name")
        enrol_files = st.file_uploader("A few photos of this person", accept_multiple_files=True,
                                       key="enrol_uploads")
        if st.form_submit_button("Enrol"):
            if not person.strip() or not enrol_files:
                st.error("Give a name and at least one photo.")
            else:
                try:
                    with st.spinner(f"Enrolling {person}..."):
                        gallery, report = enrol_photos(person.strip(), enrol_files, gallery=gallery,
                                                       names=[f.name for f in enrol_files])
                    st.session_state[GALLERY_KEY] = gallery
                    used = [r for r in report if not r["error"]]
                    st.success(f"Enrolled {person.strip()} from {len(used)} photo(s).")
                    for r in report:
                        if r["error"]:
                            st.warning(f"{r['file']}: {r['error']}")
                        elif r["used"] != "face":
                            st.info(f"{r['file']}: {r['faces']} face(s) found, used the {r['used']}.")
                except GalleryError as exc:
                    st.error(str(exc))
    with folder_tab:
        folder = st.text_input("Folder of class folders on the server", key="enrol_folder",
                               placeholder="/path/to/people  (holding <person>/*.jpg)")
        if st.button("Enrol every person in the folder", disabled=not folder.strip()):
            try:
                with st.spinner(f"Enrolling the people of {folder}..."):
                    gallery, summary = enrol_folder(folder.strip(), gallery=gallery)
                st.session_state[GALLERY_KEY] = gallery
                st.success("Enrolled " + ", ".join(f"{k} ({v})" for k, v in summary["enrolled"].items()))
                if summary["errors"]:
                    st.warning(f"{len(summary['errors'])} photo(s) could not be read: " +
                               "; ".join(e["file"] for e in summary["errors"][:5]))
            except GalleryError as exc:
                st.error(str(exc))
    with file_tab:
        loaded = st.file_uploader("Load a gallery (.npz)", key="gallery_file")
        if loaded is not None and st.button("Use this gallery"):
            try:
                gallery = Gallery.load(loaded.getvalue())
                st.session_state[GALLERY_KEY] = gallery
            except GalleryError as exc:
                st.error(str(exc))
        if gallery is not None and len(gallery):
            st.download_button("Download the gallery (.npz)", gallery.to_bytes(),
                               file_name="facelab-gallery.npz", mime="application/octet-stream")
    if gallery is not None and len(gallery):
        st.dataframe(pd.DataFrame(list(gallery.counts().items()), columns=["person", "photos"]),
                     hide_index=True)
        left, right = st.columns([3, 1])
        drop = left.selectbox("Remove a person", gallery.names, index=None, placeholder="nobody")
        if right.button("Remove", disabled=drop is None):
            st.session_state[GALLERY_KEY] = gallery = gallery.remove(drop)
            st.rerun()
    else:
        st.caption("Nobody enrolled yet.")

# Models: up to two identity models side by side, plus gender from the reference model.
options = [GALLERY, *runs, GENDER]
# ?run=NAME (the Train and Runs pages link here with it) preselects that run.
wanted = st.query_params.get("run")
linked = linked_run(wanted, runs)
if wanted and linked is None:
    st.warning(f"The run {wanted!r} from the link is not among the runs with a checkpoint; "
               "choose a model below.")
default = [linked] if linked else [GALLERY] if gallery is not None and len(gallery) else []
left, right = st.columns([3, 2])
chosen = left.multiselect("Models (up to two, side by side)", options, default=default,
                          max_selections=2, format_func=lambda s, g=gallery: _label(s, runs, g))
with_gender = left.checkbox("Gender and age (reference model) for every face", value=True)
top_k = right.slider("Top-k labels", 1, MAX_TOP_K, 3)
similarity = right.slider("Similarity threshold (gallery, embedding runs)", 0.0, 1.0,
                          float(gallery.threshold) if gallery is not None else DEFAULT_SIMILARITY,
                          0.01, help="Below it a face is 'not recognised' (cosine similarity).")
floor = right.slider("Minimum probability (classifier runs)", 0.0, 1.0, 0.0, 0.05,
                     help="Under it a classifier's answer is shown as 'not recognised'.")

specs = list(chosen) + ([GENDER] if with_gender and GENDER not in chosen else [])
models: dict[str, Any] = {}
model_key: list = []
problems = []
for spec in specs:
    name = _show_name(spec, runs)
    if spec == GALLERY:
        if gallery is None or not len(gallery):
            problems.append("The gallery is empty: enrol people above first.")
            continue
        models[name] = gallery
        model_key.append((name, gallery_key(gallery)))
        continue
    try:
        models[name] = load_model(spec, _stamp(spec))
        model_key.append((name, spec, _stamp(spec)))
    except Exception as exc:  # a broken run must not break the page: say which and why
        problems.append(f"Cannot load {name}: {exc}")
for problem in problems:
    st.warning(problem)
identity = [n for n in models if n != GENDER or GENDER in chosen]


def threshold_for(pred: dict, name: str) -> float | None:
    if pred.get("score") is not None:
        return similarity
    return floor if floor > 0 and name != GENDER else None


# Inputs
uploads = st.file_uploader(
    "Photos", accept_multiple_files=True, key="photos",
    help="Common image formats: " + ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS)))
inputs = [(u.name, u.getvalue()) for u in uploads or []]
if st.toggle("Take a photo with the camera"):
    shot = st.camera_input("Camera")
    if shot is not None:
        inputs.append(("camera.jpg", shot.getvalue()))
if not inputs:
    st.info("Upload one or more photos (or take one with the camera) to see every face labelled. "
            "Choose the models above; enrol people into the gallery to recognise them.")
    st.stop()

results = []
for name, data in inputs:
    st.divider()
    st.subheader(name)
    try:
        with st.spinner(f"Looking for faces in {name}..."):
            out = analyse(data, name, tuple(model_key), top_k, models)
    except Exception as exc:  # one broken photo must not hide the others
        st.error(f"{name}: prediction failed ({type(exc).__name__}: {exc})")
        continue
    if "error" in out:
        st.error(f"{name}: {out['error']}")
        results.append({"file": name, "error": out["error"], "faces": []})
        continue
    result = out["result"]
    results.append(result)
    faces = result["faces"]
    if not faces:
        st.warning(f"No face found in {name}. Try a photo where the face is larger than 20 pixels "
                   "and not heavily turned away.")
        st.image(out["image"], width="content")
        continue

    def photo_label(i: int, face: dict) -> str:
        parts = [str(i)]
        for n in identity[:1]:
            pred = face["predictions"].get(n, {})
            top = pred.get("top") or []
            if top:
                parts.append(top[0]["label"] if recognised(pred, threshold_for(pred, n)) else "unknown")
        g = face["predictions"].get(GENDER, {}).get("top")
        if g and with_gender:
            parts.append(f"{g[0]['label']} {g[0]['prob']:.2f}")
        return " ".join(parts[:1]) + ": " + " | ".join(parts[1:]) if len(parts) > 1 else parts[0]

    s = out["scale"]
    scaled = [{"box": [v * s for v in f["box"]],
               "keypoints": [[x * s, y * s] for x, y in f["keypoints"] or []]} for f in faces]
    # Natural size (at most the column): a 200 px photo blown up to the page width is a blur.
    st.image(draw_faces(out["image"], scaled, [photo_label(i, f) for i, f in enumerate(faces, 1)]),
             width="content", caption=f"{result['width']}x{result['height']} pixels")
    if len(faces) > 1:
        more = (f" Details of the first {MAX_FACE_DETAILS} below; all are in the CSV."
                if len(faces) > MAX_FACE_DETAILS else "")
        st.info(f"{len(faces)} faces found, numbered on the photo.{more}")
    for i, face in enumerate(faces[:MAX_FACE_DETAILS], start=1):
        columns = st.columns([1] + [2] * len(identity) + ([1] if with_gender else []) if identity
                             else [1, 4])
        columns[0].image(face["crop"], caption=f"Face {i}", width=110)
        for column, n in zip(columns[1:], identity):
            pred = face["predictions"].get(n, {})
            column.markdown(f"**{n}**")
            if "error" in pred:
                column.error(pred["error"])
                continue
            t = threshold_for(pred, n)
            unit = "similarity" if pred.get("kind") == "similarity" else "probability"
            lines = [f"{k}. {p['label']} ({unit} {p['prob']:.3f})" for k, p in enumerate(pred["top"], 1)]
            if not recognised(pred, t):
                best = pred.get("score", pred["top"][0]["prob"])
                column.markdown(f":orange[**not recognised**] (best {best:.3f} < {t:.2f})")
            column.text("\n".join(lines))
        if not identity:
            columns[1].caption("No identity model chosen: enrol people or pick a run above.")
        if with_gender:
            pred = face["predictions"].get(GENDER, {})
            if pred.get("top"):
                age = f", age ~{pred['age']:.0f}" if pred.get("age") is not None else ""
                columns[-1].markdown(f"**{pred['top'][0]['label']}** {pred['top'][0]['prob']:.0%}{age}")

thresholds = {n: (similarity if isinstance(models[n], Gallery) or getattr(models[n], "is_embedding", False)
                  else (floor if floor > 0 and n != GENDER else None)) for n in models}
st.download_button("Download the results (CSV)", to_csv(prediction_rows(results, thresholds)),
                   file_name="facelab-predictions.csv", mime="text/csv")

render_probe(inputs, results, models, model_key)
