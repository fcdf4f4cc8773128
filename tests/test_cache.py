"""Crop and embedding caches: keys, round trips, bulk lookups, the hash memo, concurrency."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cache import (CacheError, CropCache, CropRecord, CropSettings, EmbeddingCache,
                        default_cache_dir)
from core.images import content_hash


def _photo(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path, quality=90)
    return path


def _record(sha: str, faces=(), error=None) -> CropRecord:
    faces = [dict(f) for f in faces]
    return CropRecord(sha, 512, 512, faces, len(faces), not faces and error is None, error,
                      0 if faces else None)


FACE = {"box": [1.0, 2.0, 30.0, 40.0], "confidence": 0.99,
        "keypoints": [[10.0, 12.0], [20.0, 12.0], [15.0, 20.0], [11.0, 28.0], [19.0, 28.0]]}


def test_default_cache_dir_follows_env(cache_dir, monkeypatch):
    assert default_cache_dir() == cache_dir
    assert CropCache().root == cache_dir
    monkeypatch.delenv("FACELAB_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "facelab"


def test_settings_keys_are_stable_and_discriminating():
    base = CropSettings()
    assert base.key() == CropSettings(160, 0.1, 20, [0.6, 0.7, 0.8]).key()
    assert len(base.key()) == 12
    assert base.key() != CropSettings(size=112).key()
    assert base.key() != CropSettings(margin=0.2).key()
    # Size and margin change the crop, not the detection.
    assert base.detector_key() == CropSettings(size=112, margin=0.3).detector_key()
    assert base.detector_key() != CropSettings(min_face_size=40).detector_key()
    assert base.detector_key() != CropSettings(thresholds=(0.5, 0.7, 0.8)).detector_key()


@pytest.mark.parametrize("kwargs, words", [
    ({"size": 8}, "crop size"), ({"margin": 1.5}, "margin"), ({"min_face_size": 5}, "min_face_size"),
    ({"thresholds": (0.6, 0.7)}, "thresholds"), ({"thresholds": (0.6, 0.7, 1.7)}, "thresholds")])
def test_settings_reject_bad_values(kwargs, words):
    with pytest.raises(ValueError, match=words):
        CropSettings(**kwargs)


def test_round_trip_with_real_crop(astronaut, tmp_path):
    cache = CropCache(tmp_path, CropSettings(size=64))
    crop = np.ascontiguousarray(np.asarray(Image.fromarray(astronaut[:200, 150:350]).resize((64, 64))))
    path = _photo(tmp_path / "astronaut.jpg", astronaut)
    sha = content_hash(path)
    assert cache.get(path) is None
    cache.put(_record(sha, [FACE]), crop)
    record = cache.get(path)
    assert record == _record(sha, [FACE])
    assert np.array_equal(cache.crop(record), crop)
    assert np.array_equal(cache.crops([sha], channels_first=True)[0], crop.transpose(2, 0, 1))
    # A renamed copy is the same photo: a hit without new work.
    copy = tmp_path / "renamed.png"
    copy.write_bytes(path.read_bytes())
    assert cache.get(copy) == record
    # Another crop size is a miss for the crop but keeps the detection.
    other = CropCache(tmp_path, CropSettings(size=96))
    assert other.get(path) is None
    assert other.lookup_detections([sha])[sha].faces == [FACE]


def test_errors_are_cached_without_crop(tmp_path):
    cache = CropCache(tmp_path)
    cache.put(_record("e" * 40, error="not an image"), None)
    record = cache.lookup_shas(["e" * 40])["e" * 40]
    assert record.error == "not an image" and not record.ok
    with pytest.raises(KeyError, match="core.prepare"):
        cache.crop(record)


def test_put_rejects_wrong_crop_shape(tmp_path):
    cache = CropCache(tmp_path, CropSettings(size=32))
    with pytest.raises(ValueError, match="uint8"):
        cache.put(_record("a" * 40, [FACE]), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        cache.put(_record("a" * 40, [FACE]), None)


def test_bulk_lookup_of_thousands(tmp_path):
    cache = CropCache(tmp_path, CropSettings(size=16))
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3000, 16, 16, 3), dtype=np.uint8)
    shas = [f"{i:040x}" for i in range(3000)]
    cache.put_many((_record(s), c) for s, c in zip(shas, crops))
    found = cache.lookup_shas(shas + ["f" * 40])
    assert len(found) == 3000
    stats = cache.stats()
    assert stats["crops"] == stats["detections"] == 3000 and stats["bytes"] > 3000 * 16 * 16 * 3
    order = shas[::-1] + shas[:5]  # any order, repeats allowed
    got = cache.crops(order)
    assert np.array_equal(got[:3000], crops[::-1]) and np.array_equal(got[3000:], crops[:5])


def test_hash_memo_notices_changes(astronaut, tmp_path):
    cache = CropCache(tmp_path / "cache")
    path = _photo(tmp_path / "a.jpg", astronaut)
    first = cache.hash_files([path, tmp_path / "missing.jpg"])
    assert first[0] == content_hash(path)
    assert isinstance(first[1], OSError)
    _photo(path, astronaut[::-1])  # rewritten in place: new bytes, new mtime
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.hash_files([path])[0] == content_hash(path) != first[0]


def test_concurrent_readers_and_a_writer(tmp_path):
    cache = CropCache(tmp_path, CropSettings(size=16))
    shas = [f"{i:040x}" for i in range(400)]
    cache.put_many((_record(s), np.full((16, 16, 3), i % 251, np.uint8)) for i, s in enumerate(shas[:200]))
    problems = []

    def reader():
        try:
            for _ in range(20):
                found = cache.lookup_shas(shas)
                assert len(found) >= 200
                assert cache.crops(list(found)).shape[0] == len(found)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            problems.append(exc)

    def writer():
        other = CropCache(tmp_path, CropSettings(size=16))  # as another process would
        for i, s in enumerate(shas[200:], start=200):
            other.put(_record(s), np.full((16, 16, 3), i % 251, np.uint8))

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []
    assert len(cache.lookup_shas(shas)) == 400


def test_embedding_cache(tmp_path):
    cache = EmbeddingCache("dlib_face-test", root=tmp_path)
    vectors = np.random.default_rng(1).normal(size=(3, 128))
    cache.put_many(["a", "b", "c"], vectors)
    got = cache.get_many(["c", "a", "zzz"])
    assert set(got) == {"a", "c"}
    assert got["a"].dtype == np.float32 and np.allclose(got["a"], vectors[0], atol=1e-6)
    assert cache.get("zzz") is None
    assert EmbeddingCache("other-model", root=tmp_path).get_many(["a"]) == {}
    cache.put("a", np.zeros(128))
    assert not cache.get("a").any()
    with pytest.raises(ValueError, match="vectors"):
        cache.put_many(["a", "b"], np.zeros((3, 128)))
    with pytest.raises(ValueError, match="model_key"):
        EmbeddingCache("")


WRITER = """
import sys, numpy as np
from core.cache import CropCache, CropRecord, CropSettings
cache = CropCache(sys.argv[1], CropSettings(size=16))
for batch in range(10):
    cache.put_many((CropRecord(f"{batch * 50 + i:040x}", 9, 9, [], 0, True), np.zeros((16, 16, 3), np.uint8))
                   for i in range(50))
"""


def test_reader_beside_a_writer_process(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    shas = [f"{i:040x}" for i in range(500)]
    cache = CropCache(tmp_path, CropSettings(size=16))
    cache.lookup_shas(shas)  # creates the database before the writer starts
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=ROOT)
    seen = [0]
    while writer.poll() is None:
        found = len(cache.lookup_shas(shas))
        assert found >= seen[-1] and found % 50 == 0  # whole transactions only, never a torn one
        seen.append(found)
    assert writer.returncode == 0
    assert len(cache.lookup_shas(shas)) == 500


def test_unusable_cache_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="FACELAB_CACHE"):
        CropCache(blocker / "cache").lookup_shas(["a" * 40])


def test_embedding_get_or_compute_computes_only_the_missing_in_chunks(tmp_path):
    store = EmbeddingCache("toy", root=tmp_path)
    store.put_many(["a"], np.ones((1, 2), np.float32))
    asked, seen = [], []

    def compute(part):
        asked.append(list(part))
        return np.full((len(part), 2), len(asked), np.float32)

    known = store.get_or_compute(["a", "b", "c", "b", "d"], compute, chunk=2,
                                 progress=lambda done, total: seen.append((done, total)))
    assert asked == [["b", "c"], ["d"]] and seen == [(2, 3), (3, 3)]
    assert set(known) == {"a", "b", "c", "d"} and known["d"].tolist() == [2.0, 2.0]
    assert store.get_or_compute(["b", "d"], compute).keys() == {"b", "d"} and len(asked) == 2
