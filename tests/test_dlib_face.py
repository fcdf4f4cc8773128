"""dlib's 128-D face embedder on real crops: unit vectors, deterministic, people kept apart."""
from __future__ import annotations

import numpy as np
import pytest

from core.detection import align_face, get_detector, select_primary
from core.images import load_image
from core.models import build_model, embed_faces, get_embedder
from core.models.dlib_face import model_files

CROP = {"size": 160, "margin": 0.1}  # core.cache.CropSettings() defaults


def aligned_crops(images: list[np.ndarray]) -> np.ndarray:
    faces = get_detector().detect(images)
    crops = []
    for image, found in zip(images, faces):
        face = select_primary(found)
        assert face is not None, "MTCNN found no face in a test photo"
        crops.append(align_face(image, face.keypoints, **CROP))
    return np.stack(crops)


@pytest.fixture(scope="module")
def astronaut_crop(astronaut) -> np.ndarray:
    return aligned_crops([astronaut])[0]


def test_model_files_ship_with_the_package():
    for path in model_files():
        assert path.is_file() and path.suffix == ".dat"


def test_astronaut_crop_gives_a_deterministic_unit_128_vector(astronaut_crop):
    vec = embed_faces(astronaut_crop)
    assert vec.shape == (1, 128) and vec.dtype == np.float32
    assert np.isfinite(vec).all()
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    again = embed_faces(np.stack([astronaut_crop, astronaut_crop]))
    np.testing.assert_array_equal(again, np.vstack([vec, vec]))


def test_embedding_of_the_whole_photo_with_a_box_matches_the_crop(astronaut, astronaut_crop):
    face = select_primary(get_detector().detect([astronaut])[0])
    from_photo = get_embedder().embed_photo(astronaut, [face.box])
    from_crop = embed_faces(astronaut_crop)
    assert from_photo.shape == (1, 128)
    # same face, two routes: far closer than two different people (about 0.55 on lfw40)
    assert np.linalg.norm(from_photo - from_crop) < 0.3


def test_empty_and_bad_inputs():
    assert embed_faces(np.zeros((0, 160, 160, 3), np.uint8)).shape == (0, 128)
    assert embed_faces([]).shape == (0, 128)
    with pytest.raises(ValueError, match="uint8 RGB"):
        embed_faces(np.zeros((1, 160, 160, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        embed_faces(np.zeros((160, 160), np.uint8))


def test_same_person_is_closer_than_different_people(face_data):
    people = ["Colin_Powell", "Serena_Williams", "Tony_Blair", "Junichiro_Koizumi"]
    files = [sorted((face_data / "lfw40" / p).glob("*.jpg"))[:3] for p in people]
    labels = np.repeat(np.arange(len(people)), 3)
    vectors = embed_faces(aligned_crops([load_image(f) for group in files for f in group]))
    dist = np.linalg.norm(vectors[:, None] - vectors[None], axis=2)
    same = labels[:, None] == labels[None]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    assert dist[same & off_diagonal].max() < dist[~same].min()
    # the head of a dlib_face model runs on these vectors
    import torch

    model = build_model("dlib_face", num_classes=len(people)).eval()
    assert model(torch.from_numpy(vectors)).shape == (len(labels), len(people))
