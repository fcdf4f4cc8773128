"""Faces followed from one detection to the next, for video (core.live).

A face is the same face in the next detection when their boxes overlap (IoU, greedy, best pairs
first); a matched face keeps its labels, so a video re-labels it only every few detections, and
its box is smoothed against the detector's jitter. This is deliberately simple: no motion model,
and a face the detector misses once starts again as a new face.
"""
from __future__ import annotations

import dataclasses

from core.detection import Face

MATCH_IOU = 0.3   # a new box overlapping a tracked one this much is the same face


@dataclasses.dataclass
class Track:
    """One followed face: its (smoothed) detection, its labels and how old they are."""

    face: Face
    labels: tuple[str, ...] = ()
    label_age: int = 0           # detections since the labels were computed
    key: tuple = ()              # what made the labels (models, flags): a change re-labels


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def blend(old: Face, new: Face, weight: float) -> Face:
    """``new`` pulled towards ``old`` by ``weight`` (exponential smoothing of box and points)."""
    if weight <= 0:
        return new
    mix = lambda o, n: (1 - weight) * n + weight * o  # noqa: E731
    return Face(box=tuple(mix(o, n) for o, n in zip(old.box, new.box)), confidence=new.confidence,
                keypoints=tuple((mix(ox, nx), mix(oy, ny))
                                for (ox, oy), (nx, ny) in zip(old.keypoints, new.keypoints)))


def scaled(face: Face, factor: float) -> Face:
    """``face`` with every coordinate multiplied by ``factor`` (back to the full frame)."""
    return Face(box=tuple(v * factor for v in face.box), confidence=face.confidence,
                keypoints=tuple((x * factor, y * factor) for x, y in face.keypoints))


def match_tracks(tracks: list[Track], faces: list[Face], smoothing: float = 0.0) -> list[Track]:
    """The tracks after a new detection, one per face in ``faces`` (same order).

    A face overlapping a track by ``MATCH_IOU`` or more continues it (greedy, best overlap
    first): it keeps the track's labels, one detection older, with its box blended by
    ``smoothing``. The other faces start new, unlabelled tracks; unmatched tracks end.
    """
    pairs = sorted(((iou(t.face.box, f.box), i, j) for i, t in enumerate(tracks)
                    for j, f in enumerate(faces)), reverse=True)
    used_tracks: set[int] = set()
    matched: dict[int, Track] = {}
    for overlap, i, j in pairs:
        if overlap < MATCH_IOU:
            break
        if i in used_tracks or j in matched:
            continue
        used_tracks.add(i)
        old = tracks[i]
        matched[j] = Track(blend(old.face, faces[j], smoothing), old.labels, old.label_age + 1,
                           old.key)
    return [matched.get(j) or Track(face) for j, face in enumerate(faces)]
