"""What the prepare step (detect, align, cache) made of a dataset: which photos have a face,
which fell back to the whole image, which hold several faces, which could not be read.

The crops come from :func:`core.prepare.prepare` and live in :class:`core.cache.CropCache`, so
a second look (or a later training run) costs one ``stat()`` per file.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from core.cache import CropCache
from core.data.discover import discover_dataset
from core.data.spec import SPLITS, DatasetSpec

# callback(stage, done, total): stage is "prepare" here ("embed" in core.data.suspects).
StageCallback = Callable[[str, int, int], None]


@dataclasses.dataclass
class Coverage:
    """Outcome of the prepare step over a dataset; every list holds dataset paths.

    ``faces``: a face was found (the largest was cropped), ``multi_face`` those of them with
    several faces; ``fallback``: no face, the whole image is the crop; ``unreadable``:
    ``[{"file", "error"}]``. ``by_class``: one row per class with the same counts.
    """

    n: int
    faces: list[str]
    multi_face: list[str]
    fallback: list[str]
    unreadable: list[dict]
    by_class: list[dict]
    prepared_now: int
    cached: int
    seconds: float
    cache: str
    settings_key: str


def _spec(root: str | Path | DatasetSpec, task: str | None) -> DatasetSpec:
    return root if isinstance(root, DatasetSpec) else discover_dataset(root, task=task)


def dataset_rows(spec: DatasetSpec) -> list[tuple[Path, str, str]]:
    """(path, class, split) of every photo, in split then class order."""
    return [(p, spec.classes[y], s) for s in SPLITS for p, y in spec.samples[s]]


def dataset_coverage(root: str | Path | DatasetSpec, *, task: str | None = None,
                     cache: CropCache | None = None, detector=None, batch_size: int = 8,
                     callback: StageCallback | None = None) -> Coverage:
    """Prepare every photo of a dataset (cached ones cost a ``stat()``) and sort the outcomes.

    Args:
        root: dataset folder or a :class:`DatasetSpec`.
        task: as in :func:`discover_dataset` (when ``root`` is a folder).
        cache: crop cache (its settings decide the crops); default ``CropCache()``.
        detector, batch_size: passed to :func:`core.prepare.prepare`.
        callback: ``callback("prepare", done, total)`` after each photo.

    Raises:
        DatasetError: the folder is not a usable dataset.
    """
    from core.prepare import prepare

    spec = _spec(root, task)
    cache = cache if cache is not None else CropCache()
    rows = dataset_rows(spec)

    def progress(done: int, total: int, info: dict) -> None:
        if callback is not None:
            callback("prepare", done, total)

    summary = prepare([p for p, _, _ in rows], cache, detector=detector, batch_size=batch_size,
                      callback=progress)
    fallback, multi = set(summary["no_face"]), set(summary["multi_face"])
    errors = {e["file"]: e["error"] for e in summary["errors"]}
    table = {c: {"class": c, "photos": 0, "faces": 0, "multi_face": 0, "fallback": 0,
                 "unreadable": 0} for c in spec.classes}
    faces, multi_face, fallbacks, unreadable = [], [], [], []
    for path, name, _ in rows:
        key, row = str(path), table[name]
        row["photos"] += 1
        if key in errors:
            unreadable.append({"file": key, "error": errors[key]})
            row["unreadable"] += 1
        elif key in fallback:
            fallbacks.append(key)
            row["fallback"] += 1
        else:
            faces.append(key)
            row["faces"] += 1
            if key in multi:
                multi_face.append(key)
                row["multi_face"] += 1
    return Coverage(n=len(rows), faces=faces, multi_face=multi_face, fallback=fallbacks,
                    unreadable=unreadable, by_class=list(table.values()),
                    prepared_now=summary["detected"], cached=summary["cached"],
                    seconds=summary["seconds"], cache=summary["cache"],
                    settings_key=summary["settings"]["key"])


def face_crops(paths: Sequence[str | Path], cache: CropCache | None = None) -> list[np.ndarray | None]:
    """The cached crop of each photo (None when it is not in the cache or unreadable)."""
    cache = cache if cache is not None else CropCache()
    records = cache.lookup_many(list(paths))
    ok = [r for r in records if r is not None and r.error is None]
    crops = iter(cache.crops(ok)) if ok else iter(())
    return [next(crops) if r is not None and r.error is None else None for r in records]


def photo_with_faces(path: str | Path, cache: CropCache | None = None, *,
                     max_side: int = 480) -> np.ndarray:
    """The photo with every face the cache holds for it boxed (numbered, the cropped one
    labelled "crop"), shrunk to ``max_side``: how a multi-face photo was read.

    Raises:
        ImageError: the photo cannot be read.
    """
    from core.images import load_image
    from core.render import draw_faces, fit_within

    cache = cache if cache is not None else CropCache()
    image = load_image(path)
    record = cache.lookup_many([path])[0]
    faces = record.faces if record is not None and record.error is None else []
    labels = [f"{i}{' crop' if record.primary == i - 1 else ''}" for i, _ in enumerate(faces, 1)]
    scale = min(1.0, max_side / max(image.shape[:2]))
    small = fit_within(image, max_side)
    scaled = [{"box": [v * scale for v in f["box"]],
               "keypoints": [[x * scale, y * scale] for x, y in f["keypoints"]]} for f in faces]
    return draw_faces(small, scaled, labels)
