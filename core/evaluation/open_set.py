"""Open-set identification: is this person in the gallery, and if so, who?

A probe is compared with every gallery identity; its best similarity score and the name that
scored it decide the answer. With a threshold ``t``:

* a *genuine* probe (a person in the gallery) is accepted when ``score >= t`` **and** the top
  name is right: ``TAR(t)`` is the fraction of genuine probes accepted that way (a wrong name
  above the threshold is not a success, it is a misidentification);
* an *impostor* probe (a person not in the gallery) is falsely accepted when ``score >= t``:
  ``FAR(t)`` is the fraction of impostor probes above the threshold.

This is the DIR/FAR convention of open-set face identification (e.g. NIST FRVT 1:N, where DIR is
the "detection and identification rate").
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics

from ._util import as_1d, downsample_indices, flist, fnum

FAR_TARGETS = (1e-2, 1e-3)


def _inputs(genuine_scores: Any, genuine_correct: Any, impostor_scores: Any):
    genuine = as_1d(genuine_scores, "genuine_scores", np.float64)
    correct = as_1d(genuine_correct, "genuine_correct").astype(bool)
    impostor = as_1d(impostor_scores, "impostor_scores", np.float64)
    if genuine.shape != correct.shape:
        raise ValueError(f"genuine_scores ({genuine.shape[0]}) and genuine_correct "
                         f"({correct.shape[0]}) must have the same length")
    if genuine.size == 0:
        raise ValueError("open set needs genuine probes (photos of people in the gallery)")
    if impostor.size == 0:
        raise ValueError("open set needs impostor probes (photos of people not in the gallery)")
    if not (np.isfinite(genuine).all() and np.isfinite(impostor).all()):
        raise ValueError("scores must be finite numbers")
    return genuine, correct, impostor


def _curve(genuine: np.ndarray, correct: np.ndarray, impostor: np.ndarray):
    """FAR and TAR at every distinct score used as a threshold (accept when score >= t).

    The first point is "accept nothing" (threshold just above the highest score), so the curve
    runs from (0, 0) to (1, rank-1 accuracy).
    """
    scores = np.unique(np.concatenate([genuine, impostor]))[::-1]
    # "Accept nothing" sits visibly above the top score (a rounded nextafter would print equal).
    thresholds = np.concatenate([[scores[0] + 1e-6 * max(1.0, abs(scores[0]))], scores])
    imp_sorted = np.sort(impostor)
    hit_sorted = np.sort(genuine[correct])
    far = (impostor.size - np.searchsorted(imp_sorted, thresholds, side="left")) / impostor.size
    tar = (hit_sorted.size - np.searchsorted(hit_sorted, thresholds, side="left")) / genuine.size
    return far, tar, thresholds


def _eer(far: np.ndarray, tar: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """Equal error rate (FAR = FRR = 1 - TAR), linearly interpolated between curve points."""
    diff = far - (1.0 - tar)  # rises from -1 to (rank-1 accuracy) as the threshold falls
    above = np.flatnonzero(diff >= 0)
    if above.size == 0:  # no genuine probe ever named right: FRR stays 1
        return 1.0, float(thresholds[-1])
    i = int(above[0])
    if i == 0 or diff[i] == 0:
        return float(far[i]), float(thresholds[i])
    d0, d1 = diff[i - 1], diff[i]
    w = d0 / (d0 - d1)
    eer = far[i - 1] + w * (far[i] - far[i - 1])
    threshold = thresholds[i - 1] + w * (thresholds[i] - thresholds[i - 1])
    return float(eer), float(threshold)


def _at_far(far: np.ndarray, tar: np.ndarray, thresholds: np.ndarray, target: float) -> int:
    """Index of the best operating point whose FAR does not exceed ``target``.

    FAR and TAR both grow as the threshold falls, so it is the last point with FAR <= target.
    """
    return int(np.flatnonzero(far <= target + 1e-12)[-1])


def open_set_at_threshold(genuine_scores: Any, genuine_correct: Any, impostor_scores: Any,
                          threshold: float) -> dict[str, Any]:
    """TAR, FAR and open-set accuracy at one threshold (for a page's threshold slider).

    Open-set accuracy counts a genuine probe right when accepted with the right name and an
    impostor right when rejected.
    """
    genuine, correct, impostor = _inputs(genuine_scores, genuine_correct, impostor_scores)
    accepted = genuine >= threshold
    hits = int(np.sum(accepted & correct))
    false_accepts = int(np.sum(impostor >= threshold))
    return {
        "threshold": fnum(threshold),
        "tar": fnum(hits / genuine.size),
        "far": fnum(false_accepts / impostor.size),
        "frr": fnum(1.0 - hits / genuine.size),
        "misidentified": int(np.sum(accepted & ~correct)),
        "accuracy": fnum((hits + impostor.size - false_accepts) / (genuine.size + impostor.size)),
    }


def open_set_report(genuine_scores: Any, genuine_correct: Any, impostor_scores: Any, *,
                    threshold: float | None = None, max_points: int = 200,
                    include_scores: bool = False) -> dict[str, Any]:
    """ROC, AUC, EER and TAR at fixed FAR for open-set identification.

    Args:
        genuine_scores: best similarity of each probe whose person is in the gallery (N,).
        genuine_correct: whether that probe's top name is its true name (N,).
        impostor_scores: best similarity of each probe whose person is not in the gallery (M,).
        threshold: an operating threshold to report at (e.g. the gallery's); ``None`` uses
            ``threshold_at_far_1e-2``.
        max_points: at most this many ROC points in ``roc`` (ends and FAR targets always kept).
        include_scores: add the raw scores (``scores``) so a page can move a threshold itself
            with :func:`open_set_at_threshold`.

    Returns:
        ``n_genuine``, ``n_impostor``, ``rank1_accuracy`` (closed-set: right name, any score),
        ``auc`` (area under TAR against FAR, at most ``rank1_accuracy``), ``eer``,
        ``eer_threshold``, ``tar_at_far_1e-2``, ``threshold_at_far_1e-2``, the same at 1e-3,
        ``far_resolution`` (1 / n_impostor: with fewer impostors a small FAR cannot be measured;
        then FAR <= target means no false accept at all), ``at_threshold`` (see
        :func:`open_set_at_threshold`) and ``roc`` {far, tar, thresholds}.
    """
    genuine, correct, impostor = _inputs(genuine_scores, genuine_correct, impostor_scores)
    far, tar, thresholds = _curve(genuine, correct, impostor)
    eer, eer_threshold = _eer(far, tar, thresholds)
    report: dict[str, Any] = {
        "n_genuine": int(genuine.size),
        "n_impostor": int(impostor.size),
        "rank1_accuracy": fnum(correct.mean()),
        "auc": fnum(metrics.auc(far, tar)),
        "eer": fnum(eer),
        "eer_threshold": fnum(eer_threshold),
    }
    keep = set(downsample_indices(far.size, max_points).tolist())
    for target in FAR_TARGETS:
        i = _at_far(far, tar, thresholds, target)
        keep.add(i)
        report[f"tar_at_far_{target:.0e}".replace("e-0", "e-")] = fnum(tar[i])
        report[f"threshold_at_far_{target:.0e}".replace("e-0", "e-")] = fnum(thresholds[i])
    report["far_resolution"] = fnum(1.0 / impostor.size)
    if threshold is None:
        threshold = report["threshold_at_far_1e-2"]
    report["at_threshold"] = open_set_at_threshold(genuine, correct, impostor, float(threshold))
    idx = np.array(sorted(keep))
    report["roc"] = {"far": flist(far[idx]), "tar": flist(tar[idx]),
                     "thresholds": flist(thresholds[idx])}
    if include_scores:
        report["scores"] = {"genuine": flist(genuine), "genuine_correct": correct.tolist(),
                            "impostor": flist(impostor)}
    return report
