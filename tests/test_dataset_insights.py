"""core.data.insights on real photos: five_celeb as it is, and a copy of part of it with
deliberate faults (an exact copy, a re-encoded near duplicate, a photo moved into the wrong
class, a truncated JPEG, a text file named .jpg, a text file, a plain colour image)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from core.cache import CropCache
from core.data import DatasetError
from core.data.insights import (class_warnings, dataset_coverage, dataset_overview, face_crops,
                                find_suspects, photo_with_faces, thumbnail)
from core.data.suspects import NEAR_DUPLICATE_DISTANCE
from tests.conftest import FIVE, ROOT, _env

PEOPLE = ("ben_afflek", "madonna", "mindy_kaling")


def test_five_celeb_overview(face_data):
    o = dataset_overview(face_data / "five_celeb")
    assert o.classes == list(FIVE) and o.task == "identity" and o.split_source == "folders"
    assert sum(o.counts["train"].values()) == 93 and sum(o.counts["val"].values()) == 25
    assert "test" not in o.counts and o.n_photos == 118
    assert o.totals == {c: o.counts["train"][c] + o.counts["val"][c] for c in FIVE}
    # 19..27 photos per person, 5 each in val: nothing to warn about.
    assert o.warnings == [] and o.unreadable == [] and o.ignored == []
    assert len(o.sizes) == 118 and all(s["width"] > 0 and s["height"] > 0 for s in o.sizes)
    for person in FIVE:
        assert len(o.samples[person]) == 12 and len(set(o.samples[person])) == 12
        assert all(f"/{person}/" in path for path in o.samples[person])
    small = thumbnail(o.samples["madonna"][0], max_side=96)
    assert small.dtype == np.uint8 and small.shape[2] == 3 and max(small.shape[:2]) <= 96


def test_sizes_of_a_large_dataset_are_sampled(face_data, monkeypatch):
    monkeypatch.setattr("core.data.insights.MAX_SIZES", 20)
    o = dataset_overview(face_data / "five_celeb")
    assert len(o.sizes) == 20 and o.n_photos == 118
    assert "Image sizes were read from 20 of 118 photos" in o.notes[0]


def test_warnings_name_the_numbers():
    totals = {"ann": 3, "bob": 5, "cid": 40, "dee": 4, "eve": 30}
    counts = {"train": {"ann": 3, "bob": 4, "cid": 36, "dee": 4, "eve": 27},
              "val": {"ann": 0, "bob": 1, "cid": 4, "dee": 0, "eve": 3}}
    warnings = class_warnings(totals, counts)
    assert warnings[0].startswith("3 classes have fewer than 10 photos: ann (3), dee (4), bob (5).")
    assert "the largest (cid, 40 photos) has 13.3x the photos of the smallest (ann, 3)" in warnings[1]
    assert "The val split has no photos of 2 classes: ann, dee" in warnings[2]
    assert class_warnings({"a": 12, "b": 1}, tiny=10)[0] \
        .startswith("1 class has fewer than 10 photos: b (1)")
    assert class_warnings({"a": 20, "b": 30}) == []


def test_bad_folders_say_why(tmp_path, face_data):
    photo = next((face_data / "five_celeb" / "train" / "madonna").iterdir())
    with pytest.raises(DatasetError, match="not found"):
        dataset_overview(tmp_path / "nowhere")
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "a.jpg").symlink_to(photo)
    with pytest.raises(DatasetError, match="no class folders"):
        dataset_overview(tmp_path / "loose")
    (tmp_path / "one" / "madonna").mkdir(parents=True)
    for i in range(3):
        (tmp_path / "one" / "madonna" / f"{i}.jpg").symlink_to(photo)
    with pytest.raises(DatasetError, match="only one class"):
        dataset_overview(tmp_path / "one")
    (tmp_path / "one" / "empty").mkdir()
    with pytest.raises(DatasetError, match="class folder 'empty' .* has no images"):
        dataset_overview(tmp_path / "one")


def test_gender_layout(face_data, tmp_path):
    for gender in ("male", "female"):
        (tmp_path / gender).mkdir()
        for photo in sorted((face_data / "utkface_gender" / gender).iterdir())[:12]:
            (tmp_path / gender / photo.name).symlink_to(photo)
    o = dataset_overview(tmp_path)
    assert o.task == "gender" and o.classes == ["female", "male"] and o.split_source == "seeded"
    assert o.totals == {"female": 12, "male": 12} and set(o.counts) == {"train", "val", "test"}
    assert {(s["width"], s["height"]) for s in o.sizes} == {(200, 200)}


@pytest.fixture(scope="module")
def doctored(face_data, tmp_path_factory):
    """Three people (8 photos each, symlinks) plus deliberate faults; returns (root, faults)."""
    root = tmp_path_factory.mktemp("doctored")
    source = face_data / "five_celeb" / "train"
    for person in PEOPLE:
        (root / person).mkdir()
        for photo in sorted((source / person).iterdir())[:8]:
            (root / person / photo.name).symlink_to(photo)
    faults = {}
    original = sorted((source / "madonna").iterdir())[2]
    faults["copy"] = root / "madonna" / "copy_of_a_madonna_photo.jpg"
    shutil.copyfile(original, faults["copy"])
    faults["original"] = root / "madonna" / original.name
    mindy = sorted((source / "mindy_kaling").iterdir())[1]
    faults["reencoded_of"] = root / "mindy_kaling" / mindy.name
    faults["reencoded"] = root / "mindy_kaling" / "reencoded.jpg"
    Image.open(mindy).convert("RGB").save(faults["reencoded"], "JPEG", quality=70)
    ben = sorted((source / "ben_afflek").iterdir())[10]  # not among the 8 already there
    faults["moved"] = root / "madonna" / "actually_ben.jpg"
    faults["moved"].symlink_to(ben)
    jpeg = sorted((source / "mindy_kaling").iterdir())[5].read_bytes()
    faults["truncated"] = root / "mindy_kaling" / "truncated.jpg"
    faults["truncated"].write_bytes(jpeg[:len(jpeg) // 3])
    faults["text_jpg"] = root / "ben_afflek" / "shopping_list.jpg"
    faults["text_jpg"].write_text("eggs, milk, bread\n")
    faults["text"] = root / "ben_afflek" / "notes.txt"
    faults["text"].write_text("not a photo\n")
    faults["plain"] = root / "madonna" / "plain_blue.png"
    Image.new("RGB", (240, 300), (40, 90, 200)).save(faults["plain"])
    return root, faults


@pytest.fixture
def shared_cache(prepared_cache, monkeypatch):
    monkeypatch.setenv("FACELAB_CACHE", str(prepared_cache))
    return prepared_cache


def test_doctored_overview(doctored):
    root, faults = doctored
    o = dataset_overview(root)
    assert o.classes == list(PEOPLE) and o.split_source == "seeded"
    assert o.totals == {"ben_afflek": 9, "madonna": 11, "mindy_kaling": 10}
    assert [(e["file"], e["error"]) for e in o.unreadable] == \
        [(str(faults["text_jpg"]), "not an image (or a format that cannot be read)")]
    assert o.ignored == [str(faults["text"])]
    # Each fault is named with its number in the warnings (ben_afflek has 9 photos: tiny).
    text = " ".join(o.warnings)
    assert "1 class has fewer than 10 photos: ben_afflek (9)" in text
    assert "1 of 30 files cannot be read as images, e.g. shopping_list.jpg" in text
    assert "1 file in the class folders is not an image and is ignored, e.g. notes.txt" in text
    assert str(faults["text_jpg"]) not in [p for s in o.samples.values() for p in s]
    plain = next(s for s in o.sizes if s["file"] == str(faults["plain"]))
    assert (plain["width"], plain["height"]) == (240, 300)


@pytest.mark.timeout(1800)  # the session's prepared_cache detects all of five_celeb first
def test_doctored_coverage_and_suspects(doctored, shared_cache):
    root, faults = doctored
    stages = []
    coverage = dataset_coverage(root, callback=lambda *args: stages.append(args))
    assert coverage.n == 30 and stages[-1] == ("prepare", 30, 30)
    assert str(faults["plain"]) in coverage.fallback
    unreadable = {e["file"]: e["error"] for e in coverage.unreadable}
    assert set(unreadable) == {str(faults["text_jpg"]), str(faults["truncated"])}
    assert "not an image" in unreadable[str(faults["text_jpg"])]
    assert "damaged or truncated" in unreadable[str(faults["truncated"])]
    assert len(coverage.faces) + len(coverage.fallback) + len(coverage.unreadable) == 30
    assert set(coverage.multi_face) <= set(coverage.faces)
    by_class = {row["class"]: row for row in coverage.by_class}
    assert by_class["madonna"]["fallback"] >= 1 and by_class["mindy_kaling"]["unreadable"] == 1
    assert sum(row["photos"] for row in coverage.by_class) == 30
    crops = face_crops([coverage.faces[0], faults["text_jpg"]])
    assert crops[0].shape == (160, 160, 3) and crops[1] is None

    s = find_suspects(root)
    assert [sorted(g["files"]) for g in s.exact_duplicates] == \
        [sorted([str(faults["copy"]), str(faults["original"])])]
    near = {frozenset((p["a"], p["b"])): p for p in s.near_duplicates}
    pair = near[frozenset((str(faults["reencoded"]), str(faults["reencoded_of"])))]
    assert 0 < pair["distance"] < NEAR_DUPLICATE_DISTANCE
    # The exact copy is reported once, as an exact duplicate, not again as a near one.
    assert frozenset((str(faults["copy"]), str(faults["original"]))) not in near
    moved = next(m for m in s.mislabels if m["file"] == str(faults["moved"]))
    assert moved["label"] == "madonna" and moved["closer_to"] == "ben_afflek"
    assert moved["margin"] > 0 and moved["own_distance"] > moved["other_distance"]
    assert moved["neighbours"].get("ben_afflek", 0) >= 3
    assert "/ben_afflek/" in moved["example"]
    assert s.mislabels[0]["file"] == str(faults["moved"])  # the largest margin comes first
    # The plain image has no face and the two unreadable files no crop: not embedded.
    assert s.n_photos == 30 and s.not_embedded == 3 and s.n_embedded == 27


def test_second_look_is_free(doctored, shared_cache, monkeypatch):
    root, faults = doctored
    find_suspects(root)  # fills the caches (a no-op after the test above)

    def no_embedding(*args, **kwargs):
        raise AssertionError("embedded again")

    monkeypatch.setattr("core.models.dlib_face.embed_faces", no_embedding)
    s = find_suspects(root, prepare_missing=False, threshold=0.5)
    assert any(m["file"] == str(faults["moved"]) for m in s.mislabels)
    # A looser threshold finds more pairs (different photos of one person around 0.2-0.4).
    assert len(s.near_duplicates) > 1 and s.threshold == 0.5


def test_unprepared_photos_are_not_detected_when_told_not_to(doctored, tmp_path, monkeypatch):
    monkeypatch.setenv("FACELAB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(DatasetError, match="not prepared yet"):
        find_suspects(doctored[0], prepare_missing=False)


def test_multi_face_photo_is_drawn(face_data, shared_cache):
    coverage = dataset_coverage(face_data / "five_celeb")
    assert len(coverage.faces) == 117 and len(coverage.fallback) == 1 and coverage.unreadable == []
    assert coverage.prepared_now == 0 and coverage.cached == 118  # the session cache has them
    assert len(coverage.multi_face) >= 3
    drawn = photo_with_faces(coverage.multi_face[0], CropCache(), max_side=200)
    assert drawn.dtype == np.uint8 and max(drawn.shape[:2]) <= 200


def test_command_line(doctored, shared_cache):
    root, faults = doctored
    done = subprocess.run([sys.executable, "-m", "core.data.insights", str(root)], cwd=ROOT,
                          env=_env(shared_cache), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "30 photos, 3 classes" in out and "faces found" in out
    assert "near duplicates: 1 pair(s)" in out and "reencoded.jpg" in out
    assert "madonna/actually_ben.jpg: labelled madonna, closer to ben_afflek" in out
    assert "exact duplicates: 1 group(s)" in out
    bad = subprocess.run([sys.executable, "-m", "core.data.insights", str(root / "madonna"),
                          "--no-prepare"], cwd=ROOT, env=_env(shared_cache), capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "no class folders" in bad.stderr
