"""Dataset page: look at a dataset folder before training on it.

Widgets (a folder on the server or an uploaded zip, the task) -> core.data.insights -> render:
class counts with warnings, sample photos per class, image sizes; then the prepare step
(detect, align, cache; with a progress bar) and its coverage; then suspects (exact and near
duplicates, possible mislabels). Everything heavy is cached with st.cache_data on the folder and
the dataset's fingerprint (which changes when a file is added, removed or touched), and the
crops and embeddings live in the content-keyed caches, so a rerun does no detection or embedding.
"""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from pages._routing import run_through_router

run_through_router()  # before the heavy imports: a deep link on a fresh server

from core.cache import CacheError, CropCache
from core.data import DatasetError, discover_dataset
from core.data.insights import dataset_coverage, dataset_overview, find_suspects
from core.data.suspects import NEAR_DUPLICATE_DISTANCE
from pages import _dataset_views as views

TASKS = {"auto": None, "identity": "identity", "gender": "gender"}
STAGES = {"prepare": "Finding and cropping faces", "embed": "Embedding faces (dlib)"}


def _default_folder() -> str:
    # The shared face data, as the tests and benchmarks find it ($FACE_DATA_DIR or ../shared/data).
    base = Path(os.environ.get("FACE_DATA_DIR",
                               Path(__file__).resolve().parents[2] / "shared" / "data"))
    return str(base / "five_celeb") if (base / "five_celeb").is_dir() else ""


def _uploads() -> dict[str, str]:
    """{label: folder} of zips uploaded on the Train page (core.uploads, when present)."""
    try:
        from core.uploads import list_uploads

        return {f"{u.name} ({len(u.classes)} classes, {u.n_images} photos)": str(u.root)
                for u in list_uploads()}
    except Exception:  # noqa: BLE001 - an optional list: never take the page down for it
        return {}


@st.cache_resource
def prepared_datasets() -> set:
    """Datasets (with their crop cache) whose Prepare ran in this server process, from any
    session: a reload or a second tab shows their coverage at once (``check`` is cached)."""
    return set()


@st.cache_data(max_entries=16, show_spinner="Reading class folders and image sizes...")
def overview(folder: str, task: str | None, fingerprint: str):
    return dataset_overview(folder, task=task)


@st.cache_data(max_entries=8, show_spinner=False)
def check(folder: str, task: str | None, fingerprint: str, settings: str):
    """Prepare every photo (detect, align, cache) and embed its face; returns the coverage."""
    # The bar is created (and emptied) inside: a cached function's elements are replayed on a hit.
    bar = st.empty()

    def progress(stage: str, done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"{STAGES.get(stage, stage)}: {done}/{total}")

    try:
        coverage = dataset_coverage(folder, task=task, callback=progress)
        find_suspects(folder, task=task, callback=progress)  # fills the embedding cache
        return coverage
    finally:
        bar.empty()


@st.cache_data(max_entries=16, show_spinner="Comparing faces...")
def suspects(folder: str, task: str | None, fingerprint: str, settings: str, threshold: float):
    return find_suspects(folder, task=task, threshold=threshold, prepare_missing=False)


st.title("Dataset")
st.caption("Class counts, sample photos and image sizes of a dataset folder (one folder per "
           "class, or train/ and val/ folders of them); then what face detection makes of it, "
           "and photos worth a look before training.")

uploads = _uploads()
left, right = st.columns([3, 1])
if uploads:
    chosen = left.selectbox("Uploaded dataset", ["(a folder on the server)", *uploads],
                            help="Zips uploaded on the Train page.")
    if chosen in uploads and st.session_state.get("dataset_upload") != chosen:
        st.session_state["dataset_dir"] = uploads[chosen]
    st.session_state["dataset_upload"] = chosen
if "dataset_dir" not in st.session_state:
    st.session_state["dataset_dir"] = _default_folder()
folder = left.text_input("Dataset folder", key="dataset_dir",
                         placeholder="/path/to/dataset  (<class>/*.jpg or train/<class>/*.jpg)",
                         help="A folder on the server running FaceLab.").strip()
task = TASKS[right.selectbox("Labels", list(TASKS), help="auto: male/ and female/ folders mean "
                                                            "gender, anything else identity.")]

if not folder:
    st.info("Type the path of a dataset folder on the server: one folder per class "
            "(e.g. .../lfw40), or train/ and val/ folders of class folders "
            "(e.g. .../five_celeb). Set FACE_DATA_DIR to have five_celeb filled in.")
    st.stop()
try:
    # stat() per file only: cheap enough for every rerun, and it notices any change on disk.
    fingerprint = discover_dataset(folder, task=task).fingerprint
    info = overview(folder, task, fingerprint)
except OSError as exc:  # a folder we may not list, a file vanishing mid-scan
    st.error(views.md(f"Cannot read {folder}: {exc.strerror or exc}"))
    st.stop()
except DatasetError as exc:
    st.error(views.md(f"Not a usable dataset: {exc}"))
    st.caption("Expected layout: `DATASET/<class>/*.jpg` with at least two classes, or "
               "`DATASET/train/<class>/*.jpg` and `DATASET/val/<class>/*.jpg`.")
    st.stop()

# -- overview --------------------------------------------------------------------------------------
root = info.root
cards = st.columns(4)
cards[0].metric("Photos", info.n_photos)
cards[1].metric("Classes", len(info.classes))
cards[2].metric("Split", "folders" if info.split_source == "folders" else info.split_source,
                help="folders: train/val[/test] folders on disk; seeded: 80/10/10 per class, "
                     "seed 0 (what the Train page uses by default).")
cards[3].metric("Task", info.task)
for warning in info.warnings:
    st.warning(views.md(warning))
for note in info.notes:
    st.info(views.md(note))

counts_col, sizes_col = st.columns(2)
with counts_col:
    st.subheader("Photos per class")
    views.class_chart(info)
with sizes_col:
    st.subheader("Image sizes")
    views.size_chart(info)
if info.unreadable:
    with st.expander(f"Files that cannot be read ({len(info.unreadable)})", expanded=True):
        st.dataframe([{"file": views.short(e["file"], root), "reason": e["error"]}
                      for e in info.unreadable], hide_index=True)

st.subheader("Sample photos")
person = st.selectbox("Class", info.classes, key="sample_class",
                      format_func=lambda c: f"{c} ({info.totals[c]} photos)")
samples = info.samples[person]
views.grid([views.thumb(p, fingerprint) for p in samples], [views.short(p, root) for p in samples])

# -- prepare and coverage --------------------------------------------------------------------------
st.subheader("Face coverage")
crop_cache = CropCache()
settings = crop_cache.settings
key = (folder, task, fingerprint, settings.key())
checked, checked_key = prepared_datasets(), (*key, str(crop_cache.root))
if st.button("Prepare: detect, align and cache every face", type="primary",
             help="Runs MTCNN on every photo once (cached by content: a second time is instant) "
                  "and embeds each face with dlib's pretrained model for the suspects below."):
    checked.add(checked_key)
if checked_key not in checked:
    st.caption(f"Detects the face in each of the {info.n_photos} photos, crops it to "
               f"{settings.size} px and caches it (what training uses), then looks for duplicates "
               f"and possible mislabels. Photos prepared before cost nothing.")
    st.stop()
try:
    coverage = check(*key)
except (DatasetError, CacheError, OSError) as exc:
    checked.discard(checked_key)
    st.error(views.md(f"The prepare step stopped: {exc}"))
    st.stop()
cards = st.columns(4)
cards[0].metric("Faces found", len(coverage.faces))
cards[1].metric("Several faces", len(coverage.multi_face))
cards[2].metric("Whole-image fallbacks", len(coverage.fallback))
cards[3].metric("Unreadable", len(coverage.unreadable))
if coverage.unreadable:
    st.warning(views.md(f"{len(coverage.unreadable)} photo(s) cannot be read and are left out "
                        f"of training, e.g. {views.short(coverage.unreadable[0]['file'], root)}: "
                        f"{coverage.unreadable[0]['error']}"))
with st.expander("Per class"):
    st.dataframe(coverage.by_class, hide_index=True)
views.coverage_tabs(coverage, root, fingerprint)

# -- suspects --------------------------------------------------------------------------------------
st.subheader("Suspects")
threshold = st.slider("Near-duplicate distance", 0.05, 0.40, NEAR_DUPLICATE_DISTANCE, 0.01,
                      help="Two different files whose faces are closer than this are listed as "
                           "near duplicates (re-encoded, resized or re-cropped copies of one "
                           "photo are usually below 0.15).")
try:
    found = suspects(*key, threshold)
except (DatasetError, CacheError) as exc:  # the crop cache was emptied since: prepare again
    checked.discard(checked_key)
    st.error(views.md(f"{exc}. Press Prepare again."))
    st.stop()
views.suspects_view(found, root, fingerprint)
