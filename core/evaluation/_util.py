"""Small helpers shared by the metric modules: JSON-safe numbers and curve downsampling."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def fnum(value: Any, digits: int = 6) -> float | None:
    """A plain, JSON-safe float (``None`` for NaN/inf, which ``json`` would write as invalid JSON)."""
    value = float(value)
    if not math.isfinite(value):
        return None
    return round(value, digits)


def flist(values: Any, digits: int = 6) -> list[float | None]:
    return [fnum(v, digits) for v in np.asarray(values, dtype=np.float64).ravel()]


def downsample_indices(n: int, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points of a curve, always keeping both ends.

    A ROC over thousands of scores has thousands of vertices; a chart needs a few hundred and a
    JSON report should stay small.
    """
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(int))


def as_1d(values: Any, name: str, dtype: Any = None) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array
