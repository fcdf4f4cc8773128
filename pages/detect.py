"""Detect page: upload photos, see every face boxed with its 5 landmarks and its aligned crop.

Widgets -> core (load_image, MTCNN.detect, align_face, draw_faces) -> render. Results are cached
per photo content and settings, so changing an unrelated widget does not re-run the detector.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from pages._routing import run_through_router

run_through_router()  # before the heavy imports: a deep link on a fresh server

from core.detection import DetectorConfig, align_face, get_detector
from core.images import IMAGE_EXTENSIONS, ImageError, load_image
from core.render import draw_faces, fit_within

# Aligned crops use the standard 112x112 ArcFace template (core.detection.align_face).
CROP_SIZE = 112
# Longest side of the annotated photo sent to the browser: wider than the page's column.
DISPLAY_SIDE = 1600
CROPS_PER_ROW = 4
DEFAULTS = DetectorConfig()


@st.cache_resource(show_spinner="Loading the face detector...")
def load_detector():
    # One detector per process, shared by every session: its options are call arguments, so
    # sharing is safe (see core.detection).
    return get_detector()


@st.cache_data(max_entries=32, show_spinner=False)
def analyse(data: bytes, min_face_size: int, scale_factor: float,
            thresholds: tuple[float, float, float]) -> dict[str, Any]:
    """Detect, draw and align the faces of one photo. Raises ImageError for a bad file."""
    image = load_image(data)
    config = DetectorConfig(min_face_size=min_face_size, scale_factor=scale_factor,
                            thresholds=thresholds)
    faces = load_detector().detect([image], config)[0]
    return {
        "width": image.shape[1],
        "height": image.shape[0],
        "annotated": fit_within(draw_faces(image, faces), DISPLAY_SIDE),
        "crops": [align_face(image, face.keypoints, size=CROP_SIZE) for face in faces],
        "faces": [face.to_dict() for face in faces],
    }


def _image_error_message(name: str, error: ImageError) -> str:
    # core.images names only paths in its messages: an upload arrives as bytes, so name it here.
    return f"{name}: {error}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


st.title("Detect faces")
st.caption("MTCNN face detection: boxes, 5 landmarks (eyes, nose, mouth corners), confidence "
           "and an aligned 112x112 crop of every face.")

with st.expander("Detection settings"):
    left, right = st.columns(2)
    min_face_size = left.slider(
        "Minimum face size (pixels)", 10, 200, int(DEFAULTS.min_face_size), step=2,
        help="Faces smaller than this are not searched for; smaller is slower.")
    scale_factor = left.slider(
        "Pyramid scale factor", 0.50, 0.90, DEFAULTS.scale_factor, step=0.001, format="%.3f",
        help="Step between image pyramid levels; closer to 1 finds more faces, slower.")
    thresholds = (
        right.slider("Stage 1 (PNet) threshold", 0.0, 1.0, DEFAULTS.thresholds[0], step=0.05),
        right.slider("Stage 2 (RNet) threshold", 0.0, 1.0, DEFAULTS.thresholds[1], step=0.05),
        right.slider("Stage 3 (ONet) threshold", 0.0, 1.0, DEFAULTS.thresholds[2], step=0.05,
                     help="Final confidence a face needs to be shown."),
    )

# type=None on purpose: a wrong file is read and explained (core.images) instead of being
# silently refused by the browser's file picker.
uploads = st.file_uploader(
    "Photos", accept_multiple_files=True,
    help="Common image formats: " + ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS)))

if not uploads:
    st.info("Upload one or more photos to find the faces in them. Each face is boxed with its "
            "5 landmarks and numbered; its aligned crop and the detector's confidence are shown "
            "next to the photo.")
    st.stop()

total_faces = 0
for upload in uploads:
    st.divider()
    st.subheader(upload.name)
    try:
        with st.spinner(f"Detecting faces in {upload.name}..."):
            result = analyse(upload.getvalue(), int(min_face_size), float(scale_factor),
                             tuple(float(t) for t in thresholds))
    except ImageError as exc:
        st.error(_image_error_message(upload.name, exc))
        continue
    except Exception as exc:  # one broken photo must not hide the others: report and go on
        st.error(f"Detection failed for {upload.name} ({type(exc).__name__}: {exc})")
        continue

    faces = result["faces"]
    total_faces += len(faces)
    photo_col, crops_col = st.columns([3, 2])
    photo_col.image(result["annotated"], width="stretch",
                    caption=f"{result['width']}x{result['height']} pixels")
    with crops_col:
        if not faces:
            st.info(f"No face found in {upload.name}. Faces smaller than {min_face_size} pixels "
                    "are not searched for: lower the minimum face size or the thresholds in "
                    "Detection settings.")
            continue
        st.markdown(f"**{_count(len(faces), 'face')} found**")
        st.caption("Aligned crops, numbered as on the photo, with the detector's confidence.")
        # Numbered as on the photo (core.render.default_labels).
        for start in range(0, len(faces), CROPS_PER_ROW):
            columns = st.columns(CROPS_PER_ROW)
            for offset, column in enumerate(columns[:len(faces) - start]):
                index = start + offset
                column.image(result["crops"][index],
                             caption=f"Face {index + 1}: {faces[index]['confidence']:.3f}")

if len(uploads) > 1:
    st.divider()
    st.caption(f"{_count(len(uploads), 'photo')}, {_count(total_faces, 'face')} in all.")
