"""Face detection (MTCNN in PyTorch), alignment and crops.

    from core.detection import get_detector
    faces = get_detector().detect([image])[0]   # image: H x W x 3 uint8 RGB
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..images import load_image
from .align import align_face, crop_box, fallback_crop, similarity_transform
from .nets import WeightsNotFound, load_nets
from .pipeline import DetectorConfig, detect_faces

__all__ = ["Face", "DetectorConfig", "MTCNN", "get_detector", "align_face", "crop_box",
           "fallback_crop", "select_primary", "similarity_transform", "WeightsNotFound",
           "KEYPOINT_NAMES", "default_device"]

KEYPOINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class Face:
    """One detected face, in pixels of the original image.

    Attributes:
        box: (x1, y1, x2, y2).
        confidence: ONet's face probability.
        keypoints: 5 (x, y): left eye, right eye, nose, mouth left, mouth right, as in the
            ``mtcnn`` package: "left" is the image's left (the subject's right eye) for a face
            looking at the camera.
    """

    box: tuple[float, float, float, float]
    confidence: float
    keypoints: tuple[tuple[float, float], ...]

    @classmethod
    def from_row(cls, row: np.ndarray) -> "Face":
        return cls(box=tuple(float(v) for v in row[:4]), confidence=float(row[4]),
                   keypoints=tuple((float(row[5 + k]), float(row[10 + k])) for k in range(5)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Face":
        return cls(box=tuple(float(v) for v in data["box"]), confidence=float(data["confidence"]),
                   keypoints=tuple((float(x), float(y)) for x, y in data["keypoints"]))

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def to_dict(self) -> dict[str, Any]:
        """The ``mtcnn_reference`` JSON schema: box, confidence, keypoints."""
        return {"box": list(self.box), "confidence": self.confidence,
                "keypoints": [list(point) for point in self.keypoints]}


def select_primary(faces: Sequence[Face]) -> Face | None:
    """The face a single-person photo is about: the largest, weighted by confidence."""
    if not faces:
        return None
    return max(faces, key=lambda f: max(f.width, 0) * max(f.height, 0) * f.confidence)


def default_device() -> torch.device:
    """CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class MTCNN:
    """A thin, shareable front for the pure :func:`detect_faces` pipeline.

    It owns only the networks; every setting is a call argument, so one instance can serve
    every user of a Streamlit app at once.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.nets = load_nets(self.device)

    def detect(self, images: Sequence[Any], config: DetectorConfig = DetectorConfig()) -> list[list[Face]]:
        """Faces in each of ``images`` (RGB arrays, or anything :func:`load_image` accepts).

        Returns one list per image, highest confidence first. Raises ``ImageError`` for an
        input that is not an image; callers handling many files should load them first.
        """
        arrays = [img if _is_rgb_uint8(img) else load_image(img) for img in images]
        rows = detect_faces(arrays, self.nets, config, self.device)
        return [[Face.from_row(row) for row in found] for found in rows]

    def detect_one(self, image: Any, config: DetectorConfig = DetectorConfig()) -> list[Face]:
        return self.detect([image], config)[0]


def _is_rgb_uint8(image: Any) -> bool:
    return isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 \
        and image.shape[2] == 3


_DETECTORS: dict[str, MTCNN] = {}
_LOCK = threading.Lock()


def get_detector(device: torch.device | str | None = None) -> MTCNN:
    """The process-wide detector for ``device`` (built once: loading takes ~0.1 s)."""
    key = str(torch.device(device) if device is not None else default_device())
    with _LOCK:
        if key not in _DETECTORS:
            _DETECTORS[key] = MTCNN(key)
        return _DETECTORS[key]
