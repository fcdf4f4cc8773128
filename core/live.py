"""Live video: detect, track, label and draw faces frame by frame, and measure the frame rate.

    from core.live import LiveProcessor, LiveSettings
    live = LiveProcessor(LiveSettings(detect_every=3), gender=load_predictor("reference:gender"))
    out = live.process(frame)          # frame: H x W x 3 uint8 RGB; out: the same, annotated
    live.stats()                       # {"fps", "ms_per_frame", "faces", "labels", ...}

The Live camera page calls :meth:`LiveProcessor.process` from streamlit-webrtc's worker thread
while the page thread calls :meth:`LiveProcessor.configure` on every rerun; the settings and
models are one immutable snapshot swapped under a lock, so a frame never sees half a change.

Per-frame work is kept small (MTCNN takes ~75 ms on a 320x240 frame on one core of the 2-core
test machine, so it cannot run on every frame of a 30 fps camera): detection runs on a downscaled copy every
``detect_every`` frames, the boxes are carried (unchanged) in between, a face matched to the same
face in the previous detection keeps its labels for ``relabel_every`` detections, and the crops
that do need labels go to each model in one batch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from core.detection import DetectorConfig, Face, get_detector
from core.predict import crop_faces, crop_settings_of, predict_crops, predictor_name
from core.render import draw_faces, label_font
from core.tracking import Track, match_tracks, scaled

MAX_DETECT_EVERY = 30
FPS_WINDOW = 30          # frames in the moving average (about a second of camera video)
_UNCHANGED: Any = object()
ICE_SERVERS_ENV = "FACELAB_ICE_SERVERS"


def ice_servers(value: str | None = None) -> list[dict[str, Any]]:
    """The WebRTC ICE servers (STUN/TURN) for the live page, from ``$FACELAB_ICE_SERVERS``.

    Unset or empty: none. The browser and the server then connect through their own (host)
    addresses, which works on localhost and a LAN without internet; streamlit-webrtc's own
    default (Google's public STUN server) would stall the connection on a machine offline.
    For remote use set a JSON list of RTCIceServer objects, e.g.
    ``[{"urls": ["stun:stun.example.org:3478"]}, {"urls": "turn:turn.example.org:3478",
    "username": "u", "credential": "p"}]``.

    Raises:
        ValueError: the value is not such a JSON list (the message says what is expected).
    """
    text = os.environ.get(ICE_SERVERS_ENV, "") if value is None else value
    if not text.strip():
        return []
    expected = (f"{ICE_SERVERS_ENV} must be a JSON list of ICE servers such as "
                '[{"urls": ["stun:stun.example.org:3478"]}]')
    try:
        servers = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{expected}; it is not valid JSON ({exc})") from None
    if not isinstance(servers, list) or not all(
            isinstance(s, dict) and isinstance(s.get("urls"), (str, list)) for s in servers):
        raise ValueError(f"{expected}; got {text[:200]!r}")
    return servers


@dataclasses.dataclass(frozen=True)
class LiveSettings:
    """What the live processor does per frame (the page's controls).

    Attributes:
        detect_every: run the detector on every N-th frame (1 = every frame); the boxes are
            carried unchanged in between.
        detect_side: longest side of the downscaled copy the detector sees (pixels); larger
            frames are shrunk to it, smaller ones are used as they are.
        min_face: smallest face to find, in pixels of the original frame.
        label_gender: label faces with the gender model (when one is set).
        label_identity: label faces with the identity model (when one is set).
        relabel_every: a face tracked from one detection to the next keeps its labels for this
            many detections (1 = re-label on every detection).
        smoothing: weight of the previous box when a tracked face is re-detected (0 = none):
            damps the detector's jitter between detections.
        threshold: similarity threshold for galleries / embedding runs (None: the model's own).
        show_fps: draw the frame rate on the frame.
        threads: torch threads for the frame's work, set for the calling thread only (torch's
            OpenMP threads are per thread) and restored after; 0 = leave torch's setting. One
            thread by default: the stream shares the CPU with video decoding and encoding, and
            with two threads fighting for two busy cores MTCNN ran ~10x slower (bench/live.py
            --threads 2 vs 1, load average 10 on 2 cores: 0.4 vs 3.8 fps detecting every frame).
    """

    detect_every: int = 3
    detect_side: int = 320
    min_face: float = 40.0
    label_gender: bool = True
    label_identity: bool = True
    relabel_every: int = 3
    smoothing: float = 0.3
    threshold: float | None = None
    show_fps: bool = True
    threads: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.detect_every <= MAX_DETECT_EVERY:
            raise ValueError(f"detect_every must be between 1 and {MAX_DETECT_EVERY}, "
                             f"got {self.detect_every}")
        if not 48 <= self.detect_side <= 4096:
            raise ValueError(f"detect_side must be between 48 and 4096 pixels, got {self.detect_side}")
        if not self.min_face >= 12:
            raise ValueError(f"min_face must be at least 12 pixels, got {self.min_face}")
        if not self.relabel_every >= 1:
            raise ValueError(f"relabel_every must be at least 1, got {self.relabel_every}")
        if not 0 <= self.threads <= 64:
            raise ValueError(f"threads must be between 0 (torch's default) and 64, got {self.threads}")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")


@dataclasses.dataclass(frozen=True)
class _Config:
    """Settings and models, swapped as one piece; ``version`` changes with the models."""

    settings: LiveSettings
    gender: Any
    identity: Any
    version: int


def gender_text(classes: tuple[str, ...], probs: np.ndarray) -> str:
    """``"female 97%"``: the most probable class and its probability."""
    best = int(np.argmax(probs))
    return f"{classes[best]} {float(probs[best]):.0%}"


def identity_text(prediction: dict) -> str:
    """A face's identity label from a ``core.predict`` prediction: the name and its score
    (a similarity for galleries, a probability for classifiers), or ``"unknown"``."""
    if "error" in prediction:
        return "identity error"
    top = prediction["top"][0]
    if not prediction.get("recognised", True):
        return f"unknown ({top['prob']:.2f})"
    if prediction.get("kind") == "similarity":
        return f"{top['label']} {top['prob']:.2f}"
    return f"{top['label']} {top['prob']:.0%}"


class LiveProcessor:
    """Annotates the frames of one video stream; safe to configure from another thread.

    Args:
        settings: the initial :class:`LiveSettings`.
        gender: a loaded gender model (e.g. ``load_predictor("reference:gender")``) or None.
        identity: a ``Gallery`` or a loaded run (``core.predict.load_predictor``) or None.
        detector: an ``MTCNN`` (default: the process-wide one).
    """

    def __init__(self, settings: LiveSettings = LiveSettings(), *, gender: Any = None,
                 identity: Any = None, detector: Any = None) -> None:
        self._detector = detector or get_detector()
        self._config = _Config(settings, gender, identity, 0)
        self._config_lock = threading.Lock()
        self._state_lock = threading.Lock()   # one frame at a time per stream
        self._tracks: list[Track] = []
        self._frames = 0
        self._since_detection = 0
        self._detections = 0
        self._times: deque[float] = deque(maxlen=FPS_WINDOW)
        self._work: deque[float] = deque(maxlen=FPS_WINDOW)
        self._error: str | None = None
        self._last_settings: LiveSettings | None = None
        self._reset_requested = False
        self._stats: dict[str, Any] = {}
        self._publish()

    # -- configuration (any thread) ------------------------------------------------------------
    @property
    def settings(self) -> LiveSettings:
        return self._config.settings

    @property
    def gender(self) -> Any:
        return self._config.gender

    @property
    def identity(self) -> Any:
        return self._config.identity

    def configure(self, settings: LiveSettings | None = None, *, gender: Any = _UNCHANGED,
                  identity: Any = _UNCHANGED) -> None:
        """Change the settings and/or models; the next frame uses them (models that change
        make every face be re-labelled at the next detection). Pass None to drop a model."""
        with self._config_lock:
            old = self._config
            new_gender = old.gender if gender is _UNCHANGED else gender
            new_identity = old.identity if identity is _UNCHANGED else identity
            changed = new_gender is not old.gender or new_identity is not old.identity
            self._config = _Config(settings or old.settings, new_gender, new_identity,
                                   old.version + 1 if changed else old.version)

    def warm_up(self, size: tuple[int, int] = (640, 480)) -> None:
        """Run the detector and the models once on a blank frame of ``size`` (width, height).

        The first call of a model loads what it loads lazily (the reference gender model's
        landmark model: ~2 s) and the detector's first pass allocates; done before a stream
        starts, this keeps its first frame short (streamlit-webrtc gives up on a frame that
        takes over 10 s). Figures and tracked faces are not touched.
        """
        config = self._config
        frame = np.full((size[1], size[0], 3), 128, np.uint8)
        with self._state_lock:
            self._detect(frame, config.settings)
            crop_side = max(16, min(size) // 2)
            crop = np.full((1, crop_side, crop_side, 3), 128, np.uint8)
            for model in (config.gender, config.identity):
                if model is not None:
                    try:
                        predict_crops(model, crop, top_k=1, threshold=None)
                    except Exception:  # noqa: BLE001 - labelling reports its own errors later
                        pass

    # -- per frame (the stream's thread) -------------------------------------------------------
    def process(self, frame: np.ndarray) -> np.ndarray:
        """Detect (or carry) the faces of ``frame``, label them and draw boxes, landmarks,
        labels and the frame rate on a copy. ``frame``: H x W x 3 uint8 RGB."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be H x W x 3 uint8 RGB, got {frame.dtype} {frame.shape}")
        config = self._config  # one snapshot for the whole frame
        settings = config.settings
        threads = torch.get_num_threads()
        if settings.threads and settings.threads != threads:
            torch.set_num_threads(settings.threads)
        try:
            return self._process(frame, config)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)

    def _process(self, frame: np.ndarray, config: _Config) -> np.ndarray:
        settings = config.settings
        with self._state_lock:
            started = time.perf_counter()
            if self._reset_requested:
                self._reset()
            due = (self._frames == 0 or self._since_detection >= settings.detect_every - 1
                   or settings != self._last_settings)
            if due:
                self._tracks = match_tracks(self._tracks, self._detect(frame, settings),
                                           settings.smoothing)
                self._label(frame, config)
                self._since_detection, self._detections = 0, self._detections + 1
            else:
                self._since_detection += 1
            self._last_settings = settings
            self._frames += 1
            faces = [t.face for t in self._tracks]
            labels = [", ".join(t.labels) for t in self._tracks]
            out = draw_faces(frame, faces, labels) if faces else frame.copy()
            finished = time.perf_counter()
            self._times.append(finished)
            self._work.append(finished - started)
            if settings.show_fps:
                out = self._draw_fps(out)
            self._publish()
        return out

    def _detect(self, frame: np.ndarray, settings: LiveSettings) -> list[Face]:
        height, width = frame.shape[:2]
        scale = min(1.0, settings.detect_side / max(height, width))
        small = frame
        if scale < 1:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR))
        # MTCNN's PNet window is 12 px: a smaller minimum only adds pyramid levels.
        config = DetectorConfig(min_face_size=max(12.0, settings.min_face * scale))
        faces = self._detector.detect([small], config)[0]
        return [scaled(f, 1 / scale) for f in faces] if scale < 1 else faces

    def _label(self, frame: np.ndarray, config: _Config) -> None:
        settings = config.settings
        models = [m for m, on in ((config.identity, settings.label_identity),
                                  (config.gender, settings.label_gender)) if m is not None and on]
        key = (config.version, settings.label_identity, settings.label_gender, settings.threshold)
        todo = [t for t in self._tracks if t.key != key or t.label_age >= settings.relabel_every]
        if not todo:
            return
        texts: list[list[str]] = [[] for _ in todo]
        self._error = None
        for model in models:
            try:
                crops = crop_faces(frame, [t.face for t in todo], crop_settings_of(model))
                if model is config.gender:
                    probs = np.asarray(model.predict_proba(crops))
                    new = [gender_text(tuple(model.classes), p) for p in probs]
                else:
                    new = [identity_text(p) for p in
                           predict_crops(model, crops, top_k=1, threshold=settings.threshold)]
            except Exception as exc:  # noqa: BLE001 - a model failing must not end the stream
                self._error = f"{predictor_name(model)}: {type(exc).__name__}: {exc}"
                new = ["?"] * len(todo)
            for row, text in zip(texts, new):
                row.append(text)
        for track, row in zip(todo, texts):
            track.labels, track.label_age, track.key = tuple(row), 0, key

    def _draw_fps(self, image: np.ndarray) -> np.ndarray:
        canvas = Image.fromarray(image)
        draw = ImageDraw.Draw(canvas)
        text = f"{self._fps():.1f} fps"
        font = label_font(max(12, round(max(image.shape[:2]) / 30)))
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        pad = 4
        draw.rectangle((0, 0, right - left + 2 * pad, bottom - top + 2 * pad), fill=(0, 0, 0))
        draw.text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
        return np.asarray(canvas)

    # -- figures (any thread) ------------------------------------------------------------------
    def _fps(self) -> float:
        times = list(self._times)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def _publish(self) -> None:
        work = list(self._work)
        # One new dict per frame, swapped in whole: readers never wait for the frame lock (a
        # busy stream re-takes it back to back, and Python's locks are not fair).
        self._stats = {"fps": round(self._fps(), 2),
                       "ms_per_frame": round(1000 * sum(work) / len(work), 1) if work else 0.0,
                       "frames": self._frames, "detections": self._detections,
                       "faces": len(self._tracks),
                       "boxes": [tuple(round(v, 1) for v in t.face.box) for t in self._tracks],
                       "labels": [", ".join(t.labels) for t in self._tracks], "error": self._error}

    def stats(self) -> dict[str, Any]:
        """The figures after the latest frame: ``fps`` (frames per second reached, moving
        average over the last ``FPS_WINDOW`` frames), ``ms_per_frame`` (mean processing time
        over them), ``frames``, ``detections``, ``faces`` (count), ``boxes``, ``labels`` (one
        text per face), ``error`` (the last labelling failure, or None). Never blocks."""
        return dict(self._stats)

    def reset(self) -> None:
        """Forget the tracked faces and the frame-rate history (e.g. when a stream restarts);
        takes effect at the next frame."""
        self._reset_requested = True

    def _reset(self) -> None:
        self._reset_requested = False
        self._tracks, self._frames, self._since_detection, self._detections = [], 0, 0, 0
        self._times.clear()
        self._work.clear()
        self._error, self._last_settings = None, None
