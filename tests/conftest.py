"""Shared fixtures: real face data, an isolated cache, and the CI rule for prerequisites.

Outside CI a test whose prerequisite (the shared face data, a browser) is missing is skipped with
the reason; under ``CI=true`` the same test fails, so a broken CI set-up never passes quietly.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip (locally) or fail (under CI=true) when a prerequisite is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing prerequisite under CI: {reason}")
    pytest.skip(reason)


def app_ok(at):
    """An AppTest after a run, checked: the script raised nothing (the tracebacks are the
    message otherwise)."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_through_router(page: str, timeout: float):
    """An AppTest of the whole app switched to ``page`` (e.g. "pages/runs.py") and run: pages
    that link to other pages need the router's navigation."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=timeout)
    at.switch_page(page)
    return app_ok(at.run())


def face_data_dir() -> Path:
    return Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def face_data() -> Path:
    """The real face data folder (../shared/data or $FACE_DATA_DIR)."""
    path = face_data_dir()
    require((path / "README.md").is_file() or (path / "five_celeb").is_dir(),
            f"face data not found at {path} (set FACE_DATA_DIR)")
    return path


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty cache folder: no test reads or writes ~/.cache."""
    path = tmp_path_factory.mktemp("facelab-cache")
    monkeypatch.setenv("FACELAB_CACHE", str(path))
    return path


@pytest.fixture(autouse=True)
def runs_dir(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty runs folder: no test lists or writes the repository's
    weights/ (tests that need runs train them, or point FACELAB_RUNS elsewhere)."""
    path = tmp_path_factory.mktemp("facelab-runs")
    monkeypatch.setenv("FACELAB_RUNS", str(path))
    return path


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real photo with one face that ships with scikit-image (no data folder needed)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


# --- shared real-data fixtures (detection and training are the slow parts: pay once) --------

@pytest.fixture(scope="session")
def prepared_cache(face_data, tmp_path_factory) -> Path:
    """A crop cache (tmp) holding five_celeb at the default crop settings; tests point
    FACELAB_CACHE at it so only the first one pays for MTCNN."""
    from core.cache import CropCache, CropSettings
    from core.prepare import prepare

    root = _shared_cache(tmp_path_factory)
    prepare(face_data / "five_celeb", CropCache(root, CropSettings(size=160)))
    return root


def _shared_cache(tmp_path_factory) -> Path:
    """One crop cache per test session: caches are content-keyed, so every test that reads
    five_celeb photos (even through symlinks) shares its detections."""
    root = tmp_path_factory.getbasetemp() / "five-celeb-cache"
    root.mkdir(exist_ok=True)
    return root

FIVE = ("ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling")


def _env(cache: Path) -> dict:
    return {**os.environ, "FACELAB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}


def five_slice(face_data: Path, root: Path, *, train: int = 4, val: int = 3) -> Path:
    """``train`` + ``val`` photos per five_celeb person under ``root/train`` and ``root/val``,
    as symlinks (the data is never copied); the first ones by name, so every caller's slice
    shares its crops in the session cache."""
    for split, count in (("train", train), ("val", val)):
        for person in FIVE:
            folder = root / split / person
            folder.mkdir(parents=True, exist_ok=True)
            for photo in sorted((face_data / "five_celeb" / split / person).iterdir())[:count]:
                if not (folder / photo.name).exists():
                    (folder / photo.name).symlink_to(photo)
    return root


def tiny_run(tmp_path_factory, face_data: Path) -> tuple[Path, Path, Path]:
    """A 1-epoch, 64 px resnet18 trained by the real CLI on a slice of five_celeb (once per
    session): 4 train and 3 val photos per person, as symlinks (detection dominates the time).

    Returns (run folder, the crop cache it filled, the data folder with train/ and val/).
    Shared by the evaluate and predict tests through the session's base temporary folder, so
    it is trained only once.
    """
    base = tmp_path_factory.getbasetemp()
    run, cache, data = base / "tiny-run", _shared_cache(tmp_path_factory), base / "five-small"
    if not (run / "checkpoint.pt").exists():
        five_slice(face_data, data, train=4, val=3)
        cmd = [sys.executable, "-m", "core.train", "--data", str(data), "--arch", "resnet18",
               "--out", str(run), "--epochs", "1", "--image-size", "64", "--batch-size", "16",
               "--device", "cpu", "--no-progress", "--seed", "0"]
        done = subprocess.run(cmd, cwd=ROOT, env=_env(cache), capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    return run, cache, data


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, face_data):
    return tiny_run(tmp_path_factory, face_data)
