"""Binary (gender) metrics: ROC, accuracy at a threshold, and accuracy by subgroup.

Subgroups come from the data where it carries them: UTKFace file names encode age, gender and
race (``age_gender_race_date.jpg.chip.jpg``; gender 0 = male, 1 = female; race 0..4 = White,
Black, Asian, Indian, Others; see the UTKFace dataset page, susanqq.github.io/UTKFace).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn import metrics

from ._util import as_1d, downsample_indices, flist, fnum

UTK_RACES = ("White", "Black", "Asian", "Indian", "Others")
UTK_GENDERS = ("male", "female")
AGE_BANDS = ((0, 17, "0-17"), (18, 29, "18-29"), (30, 44, "30-44"), (45, 59, "45-59"),
             (60, 200, "60+"))
_UTK_NAME = re.compile(r"^(\d{1,3})_([01])_(?:([0-4])_)?(\d+)")


def utkface_attributes(path: str | Path) -> dict[str, Any] | None:
    """Age, gender and race from a UTKFace file name, or ``None`` when the name does not parse.

    A few UTKFace files lack the race field (``39_1_20170116174525125.jpg.chip.jpg``); their
    race is ``None``.
    """
    match = _UTK_NAME.match(Path(path).name)
    if not match:
        return None
    age, gender, race, _ = match.groups()
    return {"age": int(age), "gender": UTK_GENDERS[int(gender)],
            "race": UTK_RACES[int(race)] if race is not None else None}


def age_band(age: int | None) -> str | None:
    if age is None:
        return None
    for low, high, name in AGE_BANDS:
        if low <= age <= high:
            return name
    return None


def subgroups_from_files(files: Sequence[str | Path]) -> dict[str, list[str | None]]:
    """Per-sample subgroup labels ({"race": [...], "age": [...]}) from UTKFace names.

    Returns ``{}`` when no file name carries attributes; files that do not parse get ``None``.
    """
    parsed = [utkface_attributes(f) for f in files]
    if not any(p is not None for p in parsed):
        return {}
    return {
        "race": [p["race"] if p else None for p in parsed],
        "age": [age_band(p["age"]) if p else None for p in parsed],
    }


def _binary_inputs(y_true: Any, prob_positive: Any, classes: Sequence[str]):
    if len(classes) != 2:
        raise ValueError(f"a binary report needs exactly 2 classes (negative, positive), got {list(classes)}")
    labels = np.asarray(y_true)
    if labels.dtype.kind in "USO":
        index = {str(c): i for i, c in enumerate(classes)}
        stray = sorted({str(v) for v in labels} - set(index))
        if stray:
            raise ValueError(f"labels not among the classes: {stray[:5]}; classes are {list(classes)}")
        labels = np.array([index[str(v)] for v in labels])
    y = as_1d(labels, "y_true").astype(np.int64)
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("binary labels must be 0 (negative) or 1 (positive)")
    p = as_1d(prob_positive, "prob_positive", np.float64)
    if p.shape != y.shape:
        raise ValueError(f"got {p.shape[0]} probabilities for {y.shape[0]} labels")
    if y.size == 0:
        raise ValueError("no samples to evaluate")
    return y, p


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC, or ``None`` when only one class is present (it is undefined then)."""
    if np.unique(y).size < 2:
        return None
    return fnum(metrics.roc_auc_score(y, p))


def binary_at_threshold(y_true: Any, prob_positive: Any, threshold: float, *,
                        classes: Sequence[str] = ("negative", "positive")) -> dict[str, Any]:
    """Accuracy, TPR and FPR when ``prob_positive >= threshold`` predicts the positive class."""
    y, p = _binary_inputs(y_true, prob_positive, classes)
    pred = (p >= threshold).astype(np.int64)
    confusion = metrics.confusion_matrix(y, pred, labels=[0, 1])
    tn, fp, fn, tp = confusion.ravel()
    return {
        "threshold": fnum(threshold),
        "accuracy": fnum((tp + tn) / y.size),
        "balanced_accuracy": fnum(np.mean([tp / (tp + fn) if tp + fn else np.nan,
                                           tn / (tn + fp) if tn + fp else np.nan])),
        "tpr": fnum(tp / (tp + fn)) if tp + fn else None,
        "fpr": fnum(fp / (fp + tn)) if fp + tn else None,
        "confusion": confusion.astype(int).tolist(),
    }


def binary_report(y_true: Any, prob_positive: Any, *, classes: Sequence[str] = ("female", "male"),
                  threshold: float = 0.5, groups: Mapping[str, Sequence[Any]] | None = None,
                  max_points: int = 200, include_scores: bool = False) -> dict[str, Any]:
    """ROC and accuracy of a two-class model, overall and per subgroup.

    Args:
        y_true: 1 for the positive class (``classes[1]``), 0 for the negative, or class names.
        prob_positive: the model's probability of the positive class.
        classes: (negative, positive) names; the ROC treats ``classes[1]`` as positive.
        threshold: predict positive when ``prob_positive >= threshold``.
        groups: optional per-sample subgroup labels by attribute, e.g. from
            :func:`subgroups_from_files`; ``None`` entries are left out of that attribute.
        max_points: at most this many ROC points.
        include_scores: add ``scores`` {y_true, prob_positive, groups}, so a threshold slider
            can call this again with another ``threshold``.

    Returns:
        ``n``, ``classes``, ``positive``, ``roc_auc``, ``threshold``, ``accuracy``,
        ``balanced_accuracy``, ``tpr``, ``fpr``, ``confusion`` (2x2, rows true), ``best_threshold``
        (Youden's J), ``roc`` {fpr, tpr, thresholds, accuracy} and ``subgroups``
        {attribute: [{group, n, accuracy, roc_auc, positive_share}]}.
    """
    y, p = _binary_inputs(y_true, prob_positive, classes)
    report: dict[str, Any] = {"n": int(y.size), "classes": [str(c) for c in classes],
                              "positive": str(classes[1]), "roc_auc": _auc(y, p)}
    report.update(binary_at_threshold(y, p, threshold, classes=classes))
    if report["roc_auc"] is not None:
        fpr, tpr, thr = metrics.roc_curve(y, p)
        # scikit-learn starts the curve at threshold=inf (accept nothing); JSON has no inf.
        thr = thr.copy()
        thr[~np.isfinite(thr)] = float(p.max()) + 1e-6
        positives, negatives = int(y.sum()), int(y.size - y.sum())
        accuracy = (tpr * positives + (1 - fpr) * negatives) / y.size
        best = int(np.argmax(tpr - fpr))
        report["best_threshold"] = fnum(thr[best])
        idx = np.union1d(downsample_indices(fpr.size, max_points), [best])
        report["roc"] = {"fpr": flist(fpr[idx]), "tpr": flist(tpr[idx]),
                         "thresholds": flist(thr[idx]), "accuracy": flist(accuracy[idx])}
    else:
        report["best_threshold"] = None
        report["roc"] = None
    subgroups: dict[str, list[dict[str, Any]]] = {}
    for attribute, values in (groups or {}).items():
        values = list(values)
        if len(values) != y.size:
            raise ValueError(f"subgroup {attribute!r} has {len(values)} labels for {y.size} samples")
        rows = []
        names = sorted({v for v in values if v is not None}, key=str)
        for name in names:
            mask = np.array([v == name for v in values])
            pred = p[mask] >= threshold
            rows.append({"group": str(name), "n": int(mask.sum()),
                         "accuracy": fnum(np.mean(pred == y[mask].astype(bool))),
                         "roc_auc": _auc(y[mask], p[mask]),
                         "positive_share": fnum(y[mask].mean())})
        if rows:
            subgroups[attribute] = rows
    report["subgroups"] = subgroups
    if include_scores:
        report["scores"] = {"y_true": y.tolist(), "prob_positive": flist(p),
                            "groups": {k: list(v) for k, v in (groups or {}).items()}}
    return report
