"""MTCNN in PyTorch: network parity, pipeline parity with the TensorFlow ``mtcnn`` package,
alignment, batching and bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from core.detection import (DetectorConfig, Face, align_face, crop_box, fallback_crop,
                            get_detector, select_primary)
from core.detection.align import TEMPLATE_112, aligned_template, similarity_transform
from core.detection.nets import load_nets
from core.detection.pipeline import pyramid_scales
from core.images import load_image

REFERENCE_SETS = ("scenes", "five_celeb", "lfw40")


@pytest.fixture(scope="module")
def detector():
    return get_detector("cpu")


# --- the three networks against the Keras outputs -------------------------------------------

def test_networks_match_keras_outputs(face_data):
    pnet, rnet, onet = load_nets("cpu")
    folder = face_data / "mtcnn_reference" / "net_io"
    for name, net in (("pnet", pnet), ("rnet", rnet), ("onet", onet)):
        io = np.load(folder / f"{name}_io.npz")
        with torch.no_grad():
            outputs = net(torch.from_numpy(io["x"]).permute(0, 3, 1, 2))
        expected = [io[k] for k in sorted(k for k in io.files if k.startswith("y"))]
        for got, want in zip(outputs, expected):
            got = got.numpy()
            if want.shape[-1] == 2:  # softmax: we return the face probability only
                want = want[..., 1]
            elif got.ndim == 4:  # PNet's regression map: NCHW -> NHWC
                got = got.transpose(0, 2, 3, 1)
            np.testing.assert_allclose(got, want, atol=1e-4, err_msg=name)


# --- the whole pipeline against the reference detections ------------------------------------

def _reference(face_data, name):
    lines = (face_data / "mtcnn_reference" / f"{name}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_pipeline_matches_reference_detections(face_data, detector):
    """Every reference face with confidence >= 0.9 is found with IoU >= 0.9 and landmarks within
    2 px on average; at most 2% extra faces overall.

    For faces over 400 px the landmark tolerance is 0.5% of the box diagonal instead: on the one
    such face in the set (Tom Cruise, 390 x 550 px) merely decoding the JPEG with libjpeg's fast
    IDCT instead of the accurate one (TensorFlow's default vs Pillow's) moves our landmarks by
    3 px, so 2 px there would measure the JPEG decoder, not the port.
    """
    strong = missed = extra = 0
    problems = []
    for set_name in REFERENCE_SETS:
        records = _reference(face_data, set_name)
        images = [load_image(face_data / set_name / r["file"]) for r in records]
        for start in range(0, len(records), 8):  # batched, as the CLI and prepare use it
            found_batch = detector.detect(images[start:start + 8])
            for record, found in zip(records[start:start + 8], found_batch):
                reference = record["faces"]
                matched = set()
                for face in reference:
                    if not found:
                        iou, j = 0.0, -1
                    else:
                        ious = box_iou(torch.tensor([face["box"]]), torch.tensor([f.box for f in found]))[0]
                        j = int(ious.argmax())
                        iou = float(ious[j])
                    if face["confidence"] < 0.9:
                        if iou > 0.5:
                            matched.add(j)  # a weak reference face we also found is not "extra"
                        continue
                    strong += 1
                    error = (np.linalg.norm(np.array(found[j].keypoints) - np.array(face["keypoints"]),
                                            axis=1).mean() if j >= 0 else np.inf)
                    x1, y1, x2, y2 = face["box"]
                    tolerance = max(2.0, 0.005 * float(np.hypot(x2 - x1, y2 - y1)))
                    if iou >= 0.9 and error <= tolerance:
                        matched.add(j)
                    else:
                        missed += 1
                        problems.append(f"{set_name}/{record['file']}: IoU {iou:.3f}, landmarks {error:.2f} px")
                extra += len(found) - len(matched)
    assert strong > 300
    assert missed == 0, "\n".join(problems)
    assert extra <= 0.02 * strong, f"{extra} extra faces for {strong} reference faces"


# --- behaviour -------------------------------------------------------------------------------

def test_astronaut_has_one_face_with_sensible_landmarks(detector, astronaut):
    faces = detector.detect([astronaut])[0]
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    assert face.confidence > 0.99 and 150 < x1 < x2 < 300 and 40 < y1 < y2 < 220
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.keypoints
    assert lx < nx < rx  # left eye is on the image's left here (she faces the camera)
    assert max(ly, ry) < ny < min(mly, mry)
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.keypoints)


def test_batch_equals_one_by_one_for_mixed_sizes(detector, astronaut):
    small = np.ascontiguousarray(astronaut[::2, ::2])
    crop = np.ascontiguousarray(astronaut[:300, 100:400])
    batch = detector.detect([astronaut, small, crop, astronaut])
    for image, faces in zip([astronaut, small, crop, astronaut], batch):
        alone = detector.detect([image])[0]
        assert len(alone) == len(faces)
        for a, b in zip(alone, faces):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)


def test_no_face_tiny_and_blank_images(detector):
    blank = np.full((200, 300, 3), 128, dtype=np.uint8)
    tiny = np.zeros((1, 1, 3), dtype=np.uint8)
    narrow = np.zeros((11, 500, 3), dtype=np.uint8)
    assert detector.detect([blank, tiny, narrow]) == [[], [], []]
    assert detector.detect([]) == []


def test_settings_are_call_arguments(detector, astronaut):
    strict = DetectorConfig(thresholds=(0.6, 0.7, 0.99999999))
    assert detector.detect([astronaut], strict)[0] == []
    assert len(detector.detect([astronaut])[0]) == 1  # the shared detector kept no state
    with pytest.raises(ValueError, match="scale_factor"):
        DetectorConfig(scale_factor=1.5)


def test_pyramid_scales_follow_the_reference_rule():
    scales = pyramid_scales(250, 250, 20, 0.709)
    assert len(scales) == 8 and scales[0] == pytest.approx(0.6)
    assert pyramid_scales(11, 400, 20, 0.709) == []
    assert all(int(250 * s) >= 12 for s in pyramid_scales(250, 250, 8, 0.709))


# --- crops ------------------------------------------------------------------------------------

def test_similarity_transform_recovers_a_known_map():
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    target = TEMPLATE_112 @ rotation.T + shift
    matrix = similarity_transform(TEMPLATE_112, target)
    np.testing.assert_allclose(matrix[:, :2], rotation, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-9)


def test_aligned_crop_puts_the_eyes_on_the_template(detector, astronaut):
    face = detector.detect([astronaut])[0][0]
    for size, margin in ((112, 0.0), (160, 0.25)):
        crop = align_face(astronaut, face.keypoints, size=size, margin=margin)
        assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
        again = detector.detect([crop], DetectorConfig(min_face_size=size / 4))[0]
        assert again, "the aligned crop should still look like a face"
        eyes = np.array(select_primary(again).keypoints[:2])
        np.testing.assert_allclose(eyes, aligned_template(size, margin)[:2], atol=size * 0.05)


def test_box_crop_and_fallback(astronaut):
    crop = crop_box(astronaut, (-50, -50, 100, 60), margin=0.1, size=64)
    assert crop.shape == (64, 64, 3)
    assert crop[:5, :5].max() == 0  # outside the photo: black
    tall = np.zeros((300, 100, 3), dtype=np.uint8)
    tall[100:200] = 255
    assert (fallback_crop(tall, size=32) == 255).all()  # the centre square


def test_face_dict_round_trip_and_primary():
    small = Face((0, 0, 10, 10), 0.99, ((1, 1),) * 5)
    large = Face((0, 0, 50, 50), 0.95, ((1, 1),) * 5)
    assert Face.from_dict(large.to_dict()) == large
    assert select_primary([small, large]) is large
    assert select_primary([]) is None
