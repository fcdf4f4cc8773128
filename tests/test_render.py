"""core.render: drawing detections on a real photo (skimage's astronaut, runs anywhere)."""
from __future__ import annotations

import numpy as np
import pytest

from core.render import BOX_COLOUR, KEYPOINT_COLOURS, default_labels, draw_faces, fit_within

# Roughly the astronaut's face in skimage.data.astronaut() (512x512): where, exactly, does not
# matter for drawing; it keeps the label inside the photo.
FACE = {
    "box": [170.0, 60.0, 290.0, 200.0],
    "confidence": 0.9987,
    "keypoints": [[205.0, 115.0], [255.0, 115.0], [230.0, 145.0], [210.0, 170.0],
                  [250.0, 170.0]],
}


def test_draws_box_and_landmarks_on_a_copy(astronaut):
    original = astronaut.copy()
    out = draw_faces(astronaut, [FACE])

    assert out.shape == astronaut.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(astronaut, original)  # the input is untouched
    assert tuple(out[130, 170]) == BOX_COLOUR            # left edge of the box
    assert tuple(out[200, 230]) == BOX_COLOUR            # bottom edge
    for (x, y), colour in zip(FACE["keypoints"], KEYPOINT_COLOURS):
        assert tuple(out[int(y), int(x)]) == colour
    # Nothing is drawn far from the face.
    np.testing.assert_array_equal(out[400:, 400:], astronaut[400:, 400:])


def test_label_is_drawn_above_the_box(astronaut):
    with_label = draw_faces(astronaut, [FACE])
    without = draw_faces(astronaut, [FACE], labels=[None])
    band = (slice(30, 60), slice(170, 290))              # just above the box
    assert not np.array_equal(with_label[band], without[band])
    np.testing.assert_array_equal(without[band], astronaut[band])


def test_default_labels_number_and_confidence():
    assert default_labels([FACE, {**FACE, "confidence": 0.5}]) == ["1: 0.999", "2: 0.500"]


def test_accepts_face_objects(astronaut):
    detection = pytest.importorskip("core.detection")
    face = detection.Face(box=tuple(FACE["box"]), confidence=FACE["confidence"],
                          keypoints=tuple(tuple(p) for p in FACE["keypoints"]))
    np.testing.assert_array_equal(draw_faces(astronaut, [face]), draw_faces(astronaut, [FACE]))


def test_no_faces_returns_an_equal_copy(astronaut):
    out = draw_faces(astronaut, [])
    np.testing.assert_array_equal(out, astronaut)
    assert out is not astronaut


def test_boxes_outside_the_photo_do_not_fail(astronaut):
    face = {**FACE, "box": [-50.0, -40.0, 600.0, 700.0]}
    assert draw_faces(astronaut, [face]).shape == astronaut.shape


def test_bad_inputs_give_clear_errors(astronaut):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        draw_faces(astronaut[..., 0], [FACE])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        draw_faces(astronaut.astype(np.float32), [FACE])
    with pytest.raises(ValueError, match="2 labels for 1 faces"):
        draw_faces(astronaut, [FACE], labels=["a", "b"])


def test_fit_within(astronaut):
    small = fit_within(astronaut, 128)
    assert small.shape == (128, 128, 3) and small.dtype == np.uint8
    assert fit_within(astronaut, 1000) is astronaut
    wide = fit_within(np.zeros((100, 400, 3), np.uint8), 200)
    assert wide.shape == (50, 200, 3)
