"""Shared fixtures: real face data, an isolated cache, and the CI rule for prerequisites.

Outside CI a test whose prerequisite (the shared face data, a browser) is missing is skipped with
the reason; under ``CI=true`` the same test fails, so a broken CI set-up never passes quietly.
"""
from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real photo with one face that ships with scikit-image (no data folder needed)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())
