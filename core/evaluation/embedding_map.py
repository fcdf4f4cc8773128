"""A 2-D map of embeddings or penultimate features (t-SNE), one point per evaluated face."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._util import fnum


def embedding_map(features: Any, true: Sequence[str], predicted: Sequence[str] | None = None,
                  files: Sequence[str] | None = None, *, seed: int = 0,
                  max_points: int = 3000) -> list[dict[str, Any]]:
    """t-SNE of the features, as points a scatter plot can draw directly.

    Args:
        features: (N, D) embeddings or penultimate features.
        true, predicted, files: per-sample class names and file names (for colour, error marks
            and hover).
        seed: t-SNE is stochastic; a fixed seed gives the same picture each time.
        max_points: above this, an evenly spaced subset is mapped (t-SNE is O(N log N) with a
            large constant: a few thousand points take tens of seconds on 2 cores).

    Returns:
        [{x, y, index, true, predicted, correct, file}] (``index`` into the inputs).
    """
    from sklearn.manifold import TSNE  # imported here: it is slow to import and rarely needed

    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    n = x.shape[0]
    if len(true) != n or (predicted is not None and len(predicted) != n) or \
            (files is not None and len(files) != n):
        raise ValueError("features, labels and files must have the same length")
    if n < 3:
        raise ValueError(f"a map needs at least 3 points, got {n}")
    keep = np.arange(n) if n <= max_points else np.unique(
        np.linspace(0, n - 1, max_points).round().astype(int))
    # Perplexity must stay below the number of points; 30 is scikit-learn's default.
    perplexity = float(min(30.0, max(2.0, (keep.size - 1) / 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
              metric="cosine").fit_transform(x[keep])
    points = []
    for (px, py), i in zip(xy, keep):
        row = {"x": fnum(px, 4), "y": fnum(py, 4), "index": int(i), "true": str(true[i])}
        if predicted is not None:
            row["predicted"] = str(predicted[i])
            row["correct"] = bool(predicted[i] == true[i])
        if files is not None:
            row["file"] = str(files[i])
        points.append(row)
    return points


def map_points(report: dict[str, Any], indices: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The report's map points joined with each face's confidence (for hover text and the
    faces shown under the map).

    Args:
        report: an evaluation report with ``embedding_map`` (and ``predictions``).
        indices: keep only the points with these ``index`` values (a chart selection), in this
            order; unknown indices are skipped. ``None``: every point.

    Returns:
        The ``embedding_map`` rows plus ``confidence`` (``None`` when unknown).
    """
    predictions = report.get("predictions") or []
    points = report.get("embedding_map") or []
    if indices is not None:
        by_index = {p["index"]: p for p in points}
        points = [by_index[int(i)] for i in dict.fromkeys(indices) if int(i) in by_index]
    out = []
    for point in points:
        i = point["index"]
        row = predictions[i] if 0 <= i < len(predictions) else {}
        out.append({**point, "confidence": row.get("confidence")})
    return out
