"""dlib's pretrained 128-D face embedder (ResNet, from face-recognition-models) and the
"dlib_face" model: that frozen embedder plus a small head trained on cached embeddings.

How a crop is fed to dlib (``python -m bench.models``: every 10th lfw40 photo, MTCNN-aligned
160 px crops with margin 0.1, 187 faces of 19 people, all pairs; ROC AUC of the distance for
same/different person, leave-one-out nearest-neighbour identification):
    5-point landmarks in a HOG-like box, then dlib.get_face_chip   AUC 0.9990, 1-NN 99.5%
    5-point landmarks with the whole crop as the box               AUC 0.930,  1-NN 85.6%
    crop resized straight to 150 px (no dlib alignment)            AUC 0.910,  1-NN 87.2%
    original photo + MTCNN box (reference, embed_photo)            AUC 0.9998, 1-NN 100%
dlib's landmark model was trained on boxes from dlib's HOG detector, and its descriptor on chips
made by get_face_chip, so both must see what they were trained on: we put the box where the HOG
detector puts it relative to the ArcFace template (mean over those photos) and let dlib align.
"""
from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from core.models.heads import build_head_for_embeddings
from core.models.registry import ModelSpec, register_model

EMBEDDING_DIM = 128
CHIP_SIZE = 150       # the descriptor network's input (dlib: "aligned face image of size 150x150")
CHIP_PADDING = 0.25   # dlib's default padding for compute_face_descriptor / get_face_chip
DEFAULT_CROP_MARGIN = 0.1  # core.cache.CropSettings().margin: the crops this is usually given
# Where dlib's HOG detector box sits in the 112 px ArcFace template frame (x1, y1, x2, y2):
# measured on the lfw40 photos of the study above (mean; std about 7 px).
HOG_BOX_112 = (14.0, 27.0, 100.0, 114.0)
_BATCH = 32  # chips per descriptor call: bounds memory, results do not depend on it

_RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"


def model_files() -> tuple[Path, Path]:
    """(descriptor network, 5-point landmark model) files shipped in face_recognition_models."""
    try:
        import face_recognition_models as frm

        rec, sp = Path(frm.face_recognition_model_location()), \
            Path(frm.pose_predictor_five_point_model_location())
    except ImportError:
        # face_recognition_models imports pkg_resources, which setuptools >= 81 no longer has;
        # the files are plain package data, so find the package without importing it.
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the face-recognition-models package is not installed "
                               "(pip install face-recognition-models==0.3.0)") from None
        folder = Path(list(spec.submodule_search_locations)[0]) / "models"
        rec, sp = folder / _RECOGNITION_FILE, folder / _LANDMARKS_FILE
    for path in (rec, sp):
        if not path.is_file():
            raise RuntimeError(f"dlib model file missing: {path} (reinstall face-recognition-models)")
    return rec, sp


def hog_box_in_crop(h: int, w: int, margin: float = DEFAULT_CROP_MARGIN) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the box dlib's HOG detector would give the face of an aligned
    ``h`` x ``w`` crop (ArcFace template, ``margin`` per side): what dlib's landmark model expects."""
    if not 0.0 <= margin < 2.0:
        raise ValueError(f"margin must be in [0, 2), got {margin!r}")
    scale_x, scale_y = w / (112.0 * (1 + 2 * margin)), h / (112.0 * (1 + 2 * margin))
    off = 112.0 * margin
    x1, y1, x2, y2 = HOG_BOX_112
    return (int(round((x1 + off) * scale_x)), int(round((y1 + off) * scale_y)),
            int(round((x2 + off) * scale_x)), int(round((y2 + off) * scale_y)))


def _as_crops(crops: Any) -> list[np.ndarray]:
    """A batch (N,H,W,3), a list of (H,W,3) or one (H,W,3) uint8 RGB crop -> list of arrays."""
    if isinstance(crops, torch.Tensor):
        crops = crops.detach().cpu().numpy()
    if isinstance(crops, np.ndarray) and crops.ndim == 3:
        crops = crops[None]
    items = list(crops)
    for i, c in enumerate(items):
        c = np.asarray(c)
        if c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3 or min(c.shape[:2]) < 8:
            raise ValueError(f"crop {i}: expected a uint8 RGB image (H, W, 3) of at least 8x8 px, "
                             f"got {c.dtype} {c.shape}")
        items[i] = np.ascontiguousarray(c)
    return items


class DlibFaceEmbedder:
    """dlib's face descriptor network with its 5-point aligner; thread-safe, deterministic.

    dlib objects are not documented as safe to share between threads, so calls are serialised
    by a lock (a Streamlit server shares one cached instance). No jittering: the same crop gives
    the same vector.
    """

    embedding_dim = EMBEDDING_DIM

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        rec, sp = model_files()
        self._rec = dlib.face_recognition_model_v1(str(rec))
        self._sp = dlib.shape_predictor(str(sp))
        self._lock = threading.Lock()

    def _box_in_crop(self, h: int, w: int, margin: float):
        return self._dlib.rectangle(*hog_box_in_crop(h, w, margin))

    def chips(self, crops: Any, *, margin: float = DEFAULT_CROP_MARGIN) -> list[np.ndarray]:
        """dlib-aligned 150x150 chips of aligned crops (ArcFace template, ``margin`` per side)."""
        out = []
        for c in _as_crops(crops):
            shape = self._sp(c, self._box_in_crop(c.shape[0], c.shape[1], margin))
            out.append(self._dlib.get_face_chip(c, shape, CHIP_SIZE, CHIP_PADDING))
        return out

    def _describe(self, chips: list[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        rows = []
        for start in range(0, len(chips), _BATCH):
            rows.extend(self._rec.compute_face_descriptor(chips[start:start + _BATCH]))
        vectors = np.asarray([np.asarray(r) for r in rows], dtype=np.float32)
        # dlib compares raw vectors by Euclidean distance (0.6 threshold); their norms are near
        # 1 but not exactly: normalising makes cosine similarity and distance equivalent.
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def embed(self, crops: Any, *, margin: float = DEFAULT_CROP_MARGIN) -> np.ndarray:
        """L2-normalised float32 embeddings (N, 128) of aligned face crops.

        Args:
            crops: uint8 RGB (N, H, W, 3), a list of (H, W, 3), or one (H, W, 3); crops cut by
                ``core.detection.align_face`` (any size; 160 px works well).
            margin: the crops' margin (``CropSettings.margin``); it says where the face is.
        """
        with self._lock:
            return self._describe(self.chips(crops, margin=margin))

    def embed_photo(self, image: np.ndarray, boxes: Sequence[Sequence[float]]) -> np.ndarray:
        """Embeddings (N, 128) of the faces in a whole photo given detector boxes (x1, y1, x2, y2)."""
        (image,) = _as_crops(image)
        with self._lock:
            chips = []
            for box in boxes:
                x1, y1, x2, y2 = (int(round(float(v))) for v in box)
                if x2 <= x1 or y2 <= y1:
                    raise ValueError(f"box {list(box)} is empty; expected (x1, y1, x2, y2)")
                shape = self._sp(image, self._dlib.rectangle(x1, y1, x2, y2))
                chips.append(self._dlib.get_face_chip(image, shape, CHIP_SIZE, CHIP_PADDING))
            return self._describe(chips)


@lru_cache(maxsize=1)
def get_embedder() -> DlibFaceEmbedder:
    """The process-wide embedder (its model files load once)."""
    return DlibFaceEmbedder()


def embed_faces(crops: Any, *, margin: float = DEFAULT_CROP_MARGIN) -> np.ndarray:
    """dlib 128-D embeddings (N, 128) float32, L2-normalised, of aligned face crops.

    See :meth:`DlibFaceEmbedder.embed`; ``embed_faces([])`` gives a (0, 128) array.
    """
    return get_embedder().embed(crops, margin=margin)


class DlibFaceModel(nn.Module):
    """The frozen dlib embedder + a trainable head. ``forward`` takes embeddings (N, 128), so
    training runs the head on cached embeddings; :meth:`embed` turns crops into embeddings."""

    is_embedding = True
    embedding_dim = EMBEDDING_DIM

    def __init__(self, head: nn.Module, spec: ModelSpec):
        super().__init__()
        self.head = head  # the only parameters: a checkpoint of this model is its head
        self.arch = spec.name
        self.spec = spec
        self.preprocessing = {**spec.preprocessing(), "input": "dlib_embedding"}

    def embed(self, crops: Any, *, margin: float = DEFAULT_CROP_MARGIN) -> np.ndarray:
        return embed_faces(crops, margin=margin)

    def forward_features(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if embeddings.ndim != 2 or embeddings.shape[1] != EMBEDDING_DIM:
            raise ValueError(f"dlib_face takes embeddings (N, {EMBEDDING_DIM}) from embed_faces, "
                             f"got {tuple(embeddings.shape)}")
        return self.head(embeddings)


# A head on 128 unit-norm vectors trains in seconds, so a high lr and many epochs. lfw40, seed 0,
# 30 epochs AdamW + cosine (core.train): lr 1e-2 linear val loss 0.27 (under-confident);
# lr 3e-2 linear 0.073 / mlp 0.039 (val acc 98.9% both); lr 0.1 linear 0.034 but mlp diverges.
_DLIB_FACE = ModelSpec("dlib_face", image_size=CHIP_SIZE, batch_size=64, lr=3e-2, epochs=30,
                       pretrained=True, mean=None, std=None, is_embedding=True,
                       embedding_dim=EMBEDDING_DIM, stages=0,
                       paper="dlib face recognition ResNet (King, 2017): 99.38% on LFW")


@register_model("dlib_face", spec=_DLIB_FACE)
def dlib_face(*, num_classes: int, pretrained: bool = True, head: str = "linear",
              freeze: str = "none", dropout: float = 0.5) -> DlibFaceModel:
    """dlib's pretrained face embedder (always pretrained and frozen) + a head on its 128-D output."""
    return DlibFaceModel(build_head_for_embeddings(num_classes, head, embedding_dim=EMBEDDING_DIM,
                                                   dropout=dropout), _DLIB_FACE)
