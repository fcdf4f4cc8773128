"""Large-dataset plumbing on real photos: a killed prepare resumes without redoing finished photos,
and split crops come from a memory-mapped array file built once in chunks and reused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.cache import CropCache, CropSettings
from core.prepare import prepare
from tests.conftest import ROOT, _env
from tests.test_prepare import CountingDetector

N_PHOTOS = 120


@pytest.fixture
def lfw_slice(face_data, tmp_path) -> Path:
    """N_PHOTOS lfw40 photos (symlinks), spread over its people."""
    people = sorted(p for p in (face_data / "lfw40").iterdir() if p.is_dir())
    root = tmp_path / "lfw-slice"
    per_person = -(-N_PHOTOS // len(people))
    count = 0
    for person in people:
        photos = sorted(person.iterdir())[:per_person]
        for photo in photos[:N_PHOTOS - count]:
            (root / person.name).mkdir(parents=True, exist_ok=True)
            (root / person.name / photo.name).symlink_to(photo)
            count += 1
    assert count == N_PHOTOS
    return root


@pytest.mark.slow
def test_killed_prepare_resumes_without_redoing_finished_photos(lfw_slice, tmp_path):
    cache_root = tmp_path / "cache"
    settings = CropSettings(size=48)
    cmd = [sys.executable, "-m", "core.prepare", str(lfw_slice), "--cache", str(cache_root),
           "--size", "48", "--batch-size", "4", "--workers", "2", "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(cache_root), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    files = sorted(p for p in lfw_slice.rglob("*.jpg"))
    db = cache_root / "crops.sqlite3"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists() and CropCache(cache_root, settings).stats()["crops"] >= 8:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "prepare ended before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up at all: the worst interruption
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    cache = CropCache(cache_root, settings)
    finished = sum(r is not None for r in cache.lookup_many(files))
    assert 8 <= finished < N_PHOTOS  # interrupted mid-run, with whole batches committed

    detector = CountingDetector()
    summary = prepare(lfw_slice, cache, detector=detector, batch_size=8)
    assert summary["n"] == N_PHOTOS and not summary["errors"]
    # Only the unfinished photos were decoded and detected again.
    assert summary["cached"] == finished and summary["detected"] == N_PHOTOS - finished
    assert detector.photos == N_PHOTOS - finished
    assert all(r is not None and r.ok for r in cache.lookup_many(files))


def test_split_array_is_memory_mapped_built_in_chunks_and_reused(face_data, tmp_path):
    from core.augment import resize_uint8
    from core.data import discover_dataset, load_split
    from core.data import arrays

    root = tmp_path / "few"
    for person in sorted((face_data / "lfw40").iterdir())[:2]:
        (root / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:6]:
            (root / person.name / photo.name).symlink_to(photo)
    spec = discover_dataset(root, split=(0.5, 0.5), seed=0)
    cache = CropCache(tmp_path / "cache", CropSettings(size=64))
    prepare(root, cache)
    seen = []
    original = arrays.CHUNK
    arrays.CHUNK = 2  # several chunks even for this small split
    try:
        split = load_split(spec, "train", cache, size=40, prepare_missing=False,
                           array_callback=lambda done, total: seen.append((done, total)))
    finally:
        arrays.CHUNK = original
    n = len(split.labels)
    images = split.images
    assert images.shape == (n, 3, 40, 40) and images.dtype == torch.uint8
    assert seen[-1] == (n, n) and len(seen) == -(-n // 2)  # written chunk by chunk
    # The rows are the crops resized exactly as the training preprocessing does it.
    crops = torch.from_numpy(cache.crops(split.records, channels_first=True))
    assert torch.equal(images, resize_uint8(crops, 40))
    # A file in the cache folder, mapped rather than read: the tensor's memory is the mapping.
    files = list((cache.root / arrays.ARRAYS_DIR).glob("*.npy"))
    assert len(files) == 1 and files[0].stat().st_size >= images.numel()
    mapped = np.load(files[0], mmap_mode="r")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, images.numpy())
    inode = files[0].stat().st_ino  # a rebuild would rename a new file over it
    # Reused by the next run (no rewrite); a batch is read with index_select like any tensor.
    again = load_split(spec, "train", cache, size=40, prepare_missing=False)
    assert files[0].stat().st_ino == inode
    assert torch.equal(again.images.index_select(0, torch.tensor([1, 0])), images[[1, 0]])
    # Another size or another set of photos is another file.
    load_split(spec, "val", cache, size=40, prepare_missing=False)
    load_split(spec, "train", cache, size=32, prepare_missing=False)
    assert len(list((cache.root / arrays.ARRAYS_DIR).glob("*.npy"))) == 3
    assert not list((cache.root / arrays.ARRAYS_DIR).glob("*.tmp-*"))


def test_a_killed_array_build_leaves_no_array_and_is_rebuilt(face_data, tmp_path):
    from core.data import arrays

    photos = sorted((face_data / "lfw40").iterdir())[0]
    files = sorted(photos.iterdir())[:4]
    cache = CropCache(tmp_path / "cache", CropSettings(size=48))
    prepare(files, cache)
    shas = [r.sha for r in cache.lookup_many(files)]

    def stop(done, total):
        raise KeyboardInterrupt  # what a stop request does mid-build

    original = arrays.CHUNK
    arrays.CHUNK = 2
    try:
        with pytest.raises(KeyboardInterrupt):
            arrays.crop_array(cache, shas, 32, callback=stop)
    finally:
        arrays.CHUNK = original
    folder = cache.root / arrays.ARRAYS_DIR
    assert not list(folder.glob("*.npy")) and not list(folder.glob("*.tmp-*"))
    # A temporary file of a dead process (SIGKILL) is removed by the next build.
    path = arrays.array_path(cache, 32, shas)
    stale = path.with_name(path.name + ".tmp-999999999")
    stale.write_bytes(b"partial")
    images = arrays.crop_array(cache, shas, 32)
    assert images.shape == (4, 3, 32, 32) and not stale.exists()


def test_arrays_beyond_the_budget_go_least_recently_used_first(tmp_path, monkeypatch):
    from core.data import arrays

    now = time.time()
    folder = tmp_path / "arrays"
    folder.mkdir()

    def array(name: str, mib: int, hours_ago: float) -> Path:
        path = folder / f"{name}.npy"
        path.write_bytes(b"\0" * (mib << 20))
        os.utime(path, (now - hours_ago * 3600, now - hours_ago * 3600))
        return path

    oldest, old, recent, current = (array("oldest", 3, 48), array("old", 3, 24),
                                    array("recent", 3, 0.5), array("current", 3, 72))
    removed = arrays.prune_arrays(folder, keep=current, budget_bytes=7 << 20, now=now)
    # 12 MiB > 7: the oldest two go; "current" (being opened) and "recent" (used within the hour,
    # perhaps by another rank) stay even though the folder is still over its budget.
    assert removed == [oldest, old]
    assert sorted(p.name for p in folder.iterdir()) == ["current.npy", "recent.npy"]
    assert arrays.prune_arrays(folder, budget_bytes=0, now=now + 7200) == [current, recent]

    monkeypatch.setenv(arrays.BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match="give gigabytes as a number"):
        arrays.arrays_budget_bytes()
    monkeypatch.setenv(arrays.BUDGET_ENV, "0.5")
    assert arrays.arrays_budget_bytes() == 512 << 20


def test_opening_an_array_marks_it_used_and_prunes_the_others(face_data, tmp_path, monkeypatch):
    from core.data import arrays

    files = sorted(sorted((face_data / "lfw40").iterdir())[0].iterdir())[:3]
    cache = CropCache(tmp_path / "cache", CropSettings(size=48))
    prepare(files, cache)
    shas = [r.sha for r in cache.lookup_many(files)]
    first = arrays.array_path(cache, 32, shas)
    arrays.crop_array(cache, shas, 32)
    day_ago = time.time() - 86400
    os.utime(first, (day_ago, day_ago))
    monkeypatch.setenv(arrays.BUDGET_ENV, "0")
    images = arrays.crop_array(cache, shas, 24)  # another size: a second array
    assert images.shape == (3, 3, 24, 24)
    assert not first.exists()  # unused for a day, over the (zero) budget
    assert arrays.array_path(cache, 24, shas).exists()  # the one just opened stays
    again = arrays.crop_array(cache, shas, 32)  # rebuilt from the crop cache when needed again
    assert again.shape == (3, 3, 32, 32) and first.exists()
