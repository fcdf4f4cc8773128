"""core.live on real frames: detection every N frames with the boxes carried in between, labels
from the reference gender model and a gallery, the frame-rate counter, and settings changed from
another thread while frames are processed."""
from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from PIL import Image

from core.live import LiveProcessor, LiveSettings, ice_servers
from core.predict import load_predictor
from core.render import BOX_COLOUR

GENDER = re.compile(r"^(female|male) \d+%$")
GROUP = "scenes/group/deepface__selfie-many-people.jpg"


def frame_of(photo, size=(640, 480)) -> np.ndarray:
    """A 640x480 camera-like frame: the photo fitted on a grey canvas."""
    image = photo if isinstance(photo, Image.Image) else Image.open(photo).convert("RGB")
    image = image.copy()
    image.thumbnail((size[0], size[1] - 40))
    canvas = Image.new("RGB", size, (128, 128, 128))
    canvas.paste(image, ((size[0] - image.width) // 2, 20))
    return np.asarray(canvas)


def celeb(face_data, person: str, split: str = "val", index: int = 0) -> np.ndarray:
    return frame_of(sorted((face_data / "five_celeb" / split / person).iterdir())[index])


@pytest.fixture(scope="module")
def gender():
    return load_predictor("reference:gender")


class Counting:
    """A real model, with its calls and batch sizes counted."""

    def __init__(self, model):
        self.model, self.batches = model, []
        self.classes = model.classes
        self.crop_settings = model.crop_settings

    def predict_proba(self, crops):
        self.batches.append(len(crops))
        return self.model.predict_proba(crops)


def box_pixels(image: np.ndarray) -> int:
    return int((image == np.array(BOX_COLOUR, np.uint8)).all(axis=2).sum())


def test_settings_are_checked_with_the_valid_range():
    with pytest.raises(ValueError, match="detect_every must be between 1 and 30"):
        LiveSettings(detect_every=0)
    with pytest.raises(ValueError, match="smoothing"):
        LiveSettings(smoothing=1.0)
    with pytest.raises(ValueError, match="min_face"):
        LiveSettings(min_face=5)


def test_ice_servers_default_to_none_and_parse_json():
    assert ice_servers("") == []
    servers = [{"urls": ["stun:stun.example.org:3478"]},
               {"urls": "turn:turn.example.org", "username": "u", "credential": "p"}]
    import json

    assert ice_servers(json.dumps(servers)) == servers
    with pytest.raises(ValueError, match="FACELAB_ICE_SERVERS must be a JSON list"):
        ice_servers("stun:stun.example.org")
    with pytest.raises(ValueError, match="FACELAB_ICE_SERVERS must be a JSON list"):
        ice_servers('{"urls": "stun:x"}')


def test_face_is_boxed_labelled_and_fps_drawn(astronaut, gender):
    frame = frame_of(Image.fromarray(astronaut))
    live = LiveProcessor(LiveSettings(detect_every=1), gender=gender)
    for _ in range(3):
        out = live.process(frame)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, frame)
    stats = live.stats()
    assert stats["faces"] == 1 and stats["frames"] == 3 and stats["detections"] == 3
    assert GENDER.match(stats["labels"][0]), stats["labels"]
    assert box_pixels(out) > 100 and box_pixels(frame) == 0
    # The frame rate is a moving average over the frames seen; it is drawn top left.
    assert stats["fps"] > 0 and stats["ms_per_frame"] > 0
    corner = out[:20, :60]
    assert (corner == 0).all(axis=2).mean() > 0.5 and (corner == 255).all(axis=2).any()
    x1, y1, x2, y2 = stats["boxes"][0]
    # The astronaut's face: the photo is 512 px, shown 440 px high from x = 100.
    assert 180 < x1 < x2 < 420 and 20 < y1 < y2 < 240


def test_boxes_are_carried_between_detections(face_data, gender):
    woman, man = celeb(face_data, "madonna"), celeb(face_data, "elton_john")
    counted = Counting(gender)
    live = LiveProcessor(LiveSettings(detect_every=3, smoothing=0.0), gender=counted)
    live.process(woman)
    first = live.stats()
    assert first["faces"] == 1 and first["labels"][0].startswith("female")
    # Frames 2 and 3 are carried: the man is in the picture but the woman's box and label stay,
    # and the model is not asked again.
    for _ in range(2):
        live.process(man)
        carried = live.stats()
        assert carried["boxes"] == first["boxes"] and carried["labels"] == first["labels"]
        assert carried["detections"] == 1
    assert counted.batches == [1]
    live.process(man)  # frame 4: detection again
    moved = live.stats()
    assert moved["detections"] == 2 and moved["boxes"] != first["boxes"]
    assert moved["labels"][0].startswith("male")
    assert counted.batches == [1, 1]


def test_tracked_faces_keep_labels_and_crops_go_in_one_batch(face_data, gender):
    group = frame_of(face_data / GROUP)
    counted = Counting(gender)
    live = LiveProcessor(LiveSettings(detect_every=1, detect_side=640, relabel_every=3),
                         gender=counted)
    for _ in range(4):
        live.process(group)
    stats = live.stats()
    assert stats["faces"] >= 2 and all(GENDER.match(t) for t in stats["labels"])
    # All faces in one call on the first detection; the same faces (matched by IoU) keep their
    # labels until relabel_every detections have passed.
    assert counted.batches == [stats["faces"], stats["faces"]]
    live.configure(LiveSettings(detect_every=1, detect_side=640, label_gender=False))
    live.process(group)
    assert live.stats()["labels"] == [""] * live.stats()["faces"]


def test_identity_from_a_gallery(face_data, gender, tmp_path):
    from core.gallery import enrol_folder

    people = tmp_path / "people"
    for person in ("madonna", "elton_john"):
        (people / person).mkdir(parents=True)
        for photo in sorted((face_data / "five_celeb" / "train" / person).iterdir())[:3]:
            (people / person / photo.name).symlink_to(photo)
    gallery, _ = enrol_folder(people)
    live = LiveProcessor(LiveSettings(detect_every=1), gender=gender, identity=gallery)
    live.process(celeb(face_data, "elton_john"))
    (label,) = live.stats()["labels"]
    assert re.match(r"^elton_john 0\.\d\d, male \d+%$", label), label
    # Dropping the identity model re-labels at the next detection.
    live.configure(identity=None)
    live.process(celeb(face_data, "elton_john"))
    assert GENDER.match(live.stats()["labels"][0])


def test_a_failing_model_is_reported_and_the_stream_goes_on(astronaut):
    class Broken:
        classes = ("female", "male")

        def predict_proba(self, crops):
            raise RuntimeError("weights missing")

    live = LiveProcessor(LiveSettings(detect_every=1), gender=Broken())
    out = live.process(frame_of(Image.fromarray(astronaut)))
    stats = live.stats()
    assert "weights missing" in stats["error"] and stats["labels"] == ["?"]
    assert box_pixels(out) > 100


def test_settings_change_from_another_thread_while_frames_run(face_data, gender):
    frames = [celeb(face_data, "madonna"), celeb(face_data, "elton_john")]
    live = LiveProcessor(LiveSettings(detect_every=2), gender=gender)
    errors: list[BaseException] = []
    done = threading.Event()
    shapes = set()

    def stream():
        try:
            i = 0
            while not done.is_set():
                shapes.add(live.process(frames[i % 2]).shape)
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            errors.append(exc)

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        # The page thread: settings and models flip while the stream runs; stats never block.
        for k in range(30):
            live.configure(LiveSettings(detect_every=1 + k % 4, label_gender=bool(k % 2),
                                        smoothing=0.1 * (k % 3)),
                           gender=gender if k % 3 else None)
            live.stats()
            if k % 10 == 9:
                live.reset()
            threading.Event().wait(0.02)
        final = LiveSettings(detect_every=5, label_gender=True)
        live.configure(final, gender=gender)
        start = live.stats()["frames"]
        while live.stats()["frames"] < start + 3 and worker.is_alive():
            threading.Event().wait(0.05)
    finally:
        done.set()
        worker.join(timeout=120)
    assert not errors, errors
    assert shapes == {frames[0].shape}
    assert live.settings == final
    stats = live.stats()
    assert stats["faces"] == 1 and GENDER.match(stats["labels"][0]), stats


def test_warm_up_leaves_the_figures_alone(gender):
    live = LiveProcessor(gender=gender)
    live.warm_up((320, 240))
    stats = live.stats()
    assert stats["frames"] == 0 and stats["faces"] == 0 and stats["fps"] == 0.0
