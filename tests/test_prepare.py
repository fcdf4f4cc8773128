"""Preparation: detect + align + cache, bad files, re-runs, the command line, five_celeb."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cache import CropCache, CropSettings
from core.prepare import main, prepare

FIVE_CELEB_PNG = "train/ben_afflek/httpwwwrumenewscomwpcontentuploadsbenafflekxpng.jpg"
FIVE_CELEB_GRAY = "val/madonna/httpcdnfuncheapcomwpcontentuploadsVOGUEjpg.jpg"


class CountingDetector:
    """The real detector, counting how many photos it is asked to look at."""

    def __init__(self):
        from core.detection import get_detector

        self.inner, self.photos = get_detector("cpu"), 0

    def detect(self, images, config):
        self.photos += len(images)
        return self.inner.detect(images, config)


@pytest.fixture
def astronaut_file(astronaut, tmp_path) -> Path:
    path = tmp_path / "photos" / "astronaut.png"
    path.parent.mkdir()
    # Half size: the face is still ~100 px and the detector's pyramid costs 4x less.
    Image.fromarray(astronaut).resize((256, 256), Image.Resampling.LANCZOS).save(path)
    return path


def test_astronaut_one_face_then_cache_hit(astronaut_file):
    cache = CropCache(settings=CropSettings(size=64))
    detector = CountingDetector()
    events = []
    summary = prepare(astronaut_file.parent, cache, detector=detector,
                      callback=lambda done, total, info: events.append((done, total, info)))
    assert (summary["n"], summary["detected"], summary["cached"]) == (1, 1, 0)
    assert summary["no_face"] == summary["multi_face"] == summary["errors"] == []
    assert events == [(1, 1, {"file": str(astronaut_file), "status": "detected", "n_faces": 1})]
    record = cache.get(astronaut_file)
    assert record.n_faces == 1 and record.primary == 0 and not record.fallback
    assert record.width == record.height == 256
    crop = cache.crop(record)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8 and crop.std() > 10

    again = prepare(astronaut_file.parent, cache, detector=detector)
    assert (again["cached"], again["detected"], detector.photos) == (1, 0, 1)

    # A new crop size re-aligns from the stored landmarks without running the detector.
    bigger = CropCache(settings=CropSettings(size=96, margin=0.2))
    third = prepare([astronaut_file], bigger, detector=detector)
    assert third["detected"] == 1 and detector.photos == 1
    assert bigger.crop(bigger.get(astronaut_file)).shape == (96, 96, 3)


def test_bad_files_become_errors_and_the_run_goes_on(astronaut, astronaut_file):
    folder = astronaut_file.parent
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a photo")
    full = folder / "full.jpg"
    Image.fromarray(astronaut).save(full, quality=90)
    (folder / "truncated.jpg").write_bytes(full.read_bytes()[:3000])
    full.unlink()
    cache = CropCache(settings=CropSettings(size=48))
    files = sorted(folder.iterdir()) + [folder / "vanished.jpg"]
    summary = prepare(files, cache, batch_size=2)
    errors = {Path(e["file"]).name: e["error"] for e in summary["errors"]}
    assert summary["n"] == 5 and summary["detected"] == 1
    assert set(errors) == {"empty.jpg", "notes.jpg", "truncated.jpg", "vanished.jpg"}
    assert "empty" in errors["empty.jpg"] and "not an image" in errors["notes.jpg"]
    assert "truncated" in errors["truncated.jpg"] and "cannot read" in errors["vanished.jpg"]
    # Unreadable content is remembered too: the second run decodes nothing.
    again = prepare(files, cache)
    assert again["cached"] == 4 and again["detected"] == 0 and len(again["errors"]) == 4


def test_same_photo_twice_is_detected_once(astronaut_file):
    twin = astronaut_file.with_name("copy.png")
    twin.write_bytes(astronaut_file.read_bytes())
    detector = CountingDetector()
    seen = []
    summary = prepare(astronaut_file.parent, CropCache(settings=CropSettings(size=32)),
                      detector=detector, callback=lambda d, t, info: seen.append(d))
    assert summary["detected"] == 2 and detector.photos == 1 and seen == [1, 2]


def test_command_line(astronaut_file, capsys, cache_dir):
    assert main([str(astronaut_file.parent), "--size", "48", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["detected"] == 1 and summary["settings"]["size"] == 48
    assert summary["cache"] == str(cache_dir)
    assert main([str(astronaut_file.parent), "--size", "48"]) == 0
    out = capsys.readouterr().out
    assert "already cached : 1" in out and "errors         : 0" in out
    with pytest.raises(SystemExit):
        main([str(astronaut_file.parent / "nowhere")])
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(astronaut_file.parent), "--size", "4"])


@pytest.fixture(scope="module")
def five_celeb_prepared(face_data, tmp_path_factory):
    root = face_data / "five_celeb"
    cache = CropCache(tmp_path_factory.mktemp("five-celeb-cache"), CropSettings(size=64))
    return root, cache, prepare(root, cache)


@pytest.mark.slow
def test_five_celeb_all_photos(five_celeb_prepared):
    root, cache, summary = five_celeb_prepared
    assert summary["n"] == 118 and summary["detected"] == 118 and summary["errors"] == []
    # Full web photos: MTCNN finds a face in nearly all of them; a few show several people.
    assert len(summary["no_face"]) <= 6 and len(summary["multi_face"]) <= 12
    for name in (FIVE_CELEB_PNG, FIVE_CELEB_GRAY):
        record = cache.get(root / name)
        assert record is not None and record.ok and record.n_faces >= 1
        assert cache.crop(record).shape == (64, 64, 3)
    again = prepare(root, cache)
    assert again["cached"] == 118 and again["detected"] == 0
    assert again["no_face"] == summary["no_face"] and again["multi_face"] == summary["multi_face"]


def test_stopping_midway_keeps_finished_batches(astronaut, tmp_path):
    folder = tmp_path / "three"
    folder.mkdir()
    for i, image in enumerate([astronaut, astronaut[:, ::-1], astronaut[30:, 20:]]):
        Image.fromarray(np.ascontiguousarray(image)).resize((160, 160)).save(folder / f"{i}.png")

    class Stop(Exception):
        pass

    def stop_after_two(done, total, info):
        if done == 2:
            raise Stop

    cache = CropCache(settings=CropSettings(size=32))
    with pytest.raises(Stop):
        prepare(folder, cache, batch_size=1, callback=stop_after_two)
    resumed = prepare(folder, cache, batch_size=1)
    assert (resumed["cached"], resumed["detected"]) == (2, 1)
