"""Live camera page: the webcam's video boxed and labelled as it plays (streamlit-webrtc).

Widgets -> core.live.LiveProcessor (one per browser session, kept in session_state; called from
streamlit-webrtc's worker thread for every frame, reconfigured on every rerun) -> the annotated
video, plus the figures it reaches (frames per second, faces, labels) refreshed every second.
ICE servers come from $FACELAB_ICE_SERVERS (core.live.ice_servers): none by default, so the
stream works on localhost and a LAN without internet.
"""
from __future__ import annotations

from typing import Any

import av
import streamlit as st

from pages._routing import run_through_router

run_through_router()  # before the heavy imports: a deep link on a fresh server

from streamlit_webrtc import WebRtcMode, webrtc_streamer

from core.images import ImageError, load_image
from core.live import ICE_SERVERS_ENV, MAX_DETECT_EVERY, LiveProcessor, LiveSettings, ice_servers
from core.predict import load_predictor
from core.render import fit_within
from core.runs import list_runs

GALLERY_KEY = "facelab_gallery"      # the session's Gallery, enrolled on the Predict page
PROCESSOR_KEY = "facelab_live_processor"
PLAYING_KEY = "facelab_live_playing"
GENDER = "reference:gender"
NONE, GALLERY = "none", "gallery"
# Ask the camera for VGA: enough for faces a metre away, and what the frame rate was measured
# on (bench/live.py).
CONSTRAINTS = {"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}, "audio": False}
TRANSLATIONS = {
    "media_api_not_available": "The camera is not available here: browsers allow it only on "
                               "http://localhost or over HTTPS. Use the single photo below.",
    "device_not_available": "No camera found, or another program is using it. Connect one "
                            "(or close the other program) and press Start again.",
    "device_access_denied": "The browser denied access to the camera. Allow it in the address "
                            "bar's site settings and press Start again.",
}


@st.cache_resource(show_spinner="Loading the model...", max_entries=8)
def load_model(spec: str) -> Any:
    # core.predict.load_predictor caches per process too (and reloads a retrained run).
    return load_predictor(spec)


@st.cache_data(show_spinner="Warming up the detector and the models...", max_entries=16)
def warm_up(models: tuple, _processor: LiveProcessor) -> bool:
    # Once per process and choice of models (their lazy loads are per process), before Start.
    _processor.warm_up()
    return True


def _processor() -> LiveProcessor:
    # One per browser session: its tracked faces and frame-rate history belong to one stream.
    if PROCESSOR_KEY not in st.session_state:
        st.session_state[PROCESSOR_KEY] = LiveProcessor()
    return st.session_state[PROCESSOR_KEY]


st.title("Live camera")
st.caption("Faces boxed and labelled in the webcam's video as it plays. Detection runs every N "
           "frames and the boxes are carried in between; the frame rate reached is drawn on "
           "the video.")

gallery = st.session_state.get(GALLERY_KEY)
runs = {str(r.path): r for r in list_runs() if r.checkpoint_path.exists()}
identities = {NONE: "nobody (no identity label)"}
if gallery is not None and len(gallery):
    identities[GALLERY] = f"the session's gallery ({len(gallery)} people, dlib face embedder)"
identities.update({spec: f"run {r.name} ({r.arch}, {r.task})" for spec, r in runs.items()})

left, right = st.columns(2)
detect_every = left.slider("Detect faces every N frames", 1, MAX_DETECT_EVERY // 3, 3,
                           help="1 = every frame (slowest); in between, the boxes are carried.")
min_face = left.slider("Smallest face (pixels)", 20, 200, 40, 10,
                       help="Smaller finds faces further away but detection is slower.")
with_gender = right.checkbox("Gender (reference model)", value=True)
identity_spec = right.selectbox("Identity", list(identities), format_func=identities.get,
                                index=1 if GALLERY in identities else 0,
                                help="Enrol people on the Predict page to recognise them here.")
if gallery is None or not len(gallery):
    right.caption("No gallery in this session: enrol people on the Predict page to name them.")

gender_model = identity_model = None
try:
    if with_gender:
        gender_model = load_model(GENDER)
    if identity_spec == GALLERY:
        identity_model = gallery
    elif identity_spec != NONE:
        identity_model = load_model(identity_spec)
except Exception as exc:  # a broken run must not break the page: say which and why
    st.warning(f"Cannot load {identities.get(identity_spec, identity_spec)}: {exc}")

processor = _processor()
processor.configure(LiveSettings(detect_every=detect_every, min_face=float(min_face)),
                    gender=gender_model, identity=identity_model)
warm_up((with_gender, identity_spec), processor)

try:
    servers = ice_servers()
except ValueError as exc:
    st.warning(f"{exc}. Using no ICE servers (localhost and LAN only).")
    servers = []


def on_frame(frame: av.VideoFrame) -> av.VideoFrame:
    # Runs in streamlit-webrtc's worker thread: no st.* calls here, only the processor.
    image = processor.process(frame.to_ndarray(format="rgb24"))
    return av.VideoFrame.from_ndarray(image, format="rgb24")


try:
    context = webrtc_streamer(key="facelab-live", mode=WebRtcMode.SENDRECV,
                              rtc_configuration={"iceServers": servers},
                              media_stream_constraints=CONSTRAINTS, video_frame_callback=on_frame,
                              async_processing=True, translations=TRANSLATIONS)
except Exception as exc:  # the component needs a real server session; say so, keep the fallback
    st.error(f"The live video cannot start here ({type(exc).__name__}: {exc}). Use the single "
             "photo below.")
    context = None
playing = bool(context is not None and context.state.playing)
if playing and not st.session_state.get(PLAYING_KEY):
    processor.reset()  # a new stream: no boxes or frame times from the last one
st.session_state[PLAYING_KEY] = playing
if not playing:
    st.caption(f"Press Start and allow the camera. Remote use needs STUN/TURN servers: set "
               f"{ICE_SERVERS_ENV} (a JSON list) before starting the app.")


@st.fragment(run_every=1.0 if playing else None)
def figures() -> None:
    stats = processor.stats()
    a, b, c = st.columns(3)
    a.metric("Frames per second", f"{stats['fps']:.1f}")
    b.metric("Processing per frame", f"{stats['ms_per_frame']:.0f} ms")
    c.metric("Faces", stats["faces"])
    if stats["labels"]:
        st.markdown("**Labels:** " + "; ".join(f"face {i}: {text or 'no label'}"
                                              for i, text in enumerate(stats["labels"], start=1)))
    if stats["error"]:
        st.warning(f"Labelling failed: {stats['error']}")


if playing or processor.stats()["frames"]:
    figures()

# A single photo, for a browser without a usable WebRTC camera (or a quick check).
if st.toggle("Take a single photo instead"):
    shot = st.camera_input("Photo")
    if shot is not None:
        try:
            image = load_image(shot.getvalue())
        except ImageError as exc:
            st.error(str(exc))
        else:
            single = LiveProcessor(LiveSettings(detect_every=1, min_face=float(min_face),
                                                show_fps=False),
                                   gender=gender_model, identity=identity_model)
            st.image(fit_within(single.process(image), 1280))
            stats = single.stats()
            st.write(f"{stats['faces']} face(s): " + "; ".join(t or "no label" for t in stats["labels"])
                     if stats["faces"] else "No face found in this photo.")
