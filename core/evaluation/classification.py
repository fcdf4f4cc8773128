"""Closed-set classification metrics, as plain dicts a page can render directly.

Everything here is pure (numpy + scikit-learn): predictions in, JSON-safe dict out. The
confusion matrix is ``rows = true class, columns = predicted class``, both in ``classes`` order.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn import metrics

from ._util import as_1d, fnum


def _label_indices(y_true: Any, classes: Sequence[str]) -> np.ndarray:
    """Accept class indices or class names; return indices, with a clear error for strays."""
    array = np.asarray(y_true)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind in "iu":
        y = array.astype(np.int64)
    elif array.dtype.kind in "USO":
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted({str(v) for v in array.ravel()} - set(index))
        if unknown:
            raise ValueError(f"labels not among the classes: {unknown[:5]}; classes are {list(classes)}")
        y = np.array([index[str(v)] for v in array.ravel()], dtype=np.int64)
    else:
        raise ValueError(f"labels must be class indices or class names, got dtype {array.dtype}")
    y = as_1d(y, "y_true")
    if y.size and (y.min() < 0 or y.max() >= len(classes)):
        raise ValueError(f"label index out of range 0..{len(classes) - 1}: "
                         f"{int(y.min())}..{int(y.max())}")
    return y


def _predictions(y_score: Any, n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(predicted indices, probabilities or None) from either an N x C score array or N labels."""
    scores = np.asarray(y_score)
    if scores.ndim == 2:
        if scores.shape != (n, n_classes):
            raise ValueError(f"scores must have shape (n, n_classes) = ({n}, {n_classes}), "
                             f"got {scores.shape}")
        probs = scores.astype(np.float64)
        return probs.argmax(axis=1), probs
    pred = as_1d(scores, "y_pred").astype(np.int64)
    if pred.shape[0] != n:
        raise ValueError(f"got {pred.shape[0]} predictions for {n} labels")
    if pred.size and (pred.min() < 0 or pred.max() >= n_classes):
        raise ValueError(f"predicted index out of range 0..{n_classes - 1}")
    return pred, None


def classification_report(y_true: Any, y_score: Any, classes: Sequence[str],
                          files: Sequence[str] | None = None, *,
                          max_misclassified: int | None = None) -> dict[str, Any]:
    """Accuracy, per-class table, confusion matrix and the errors of a closed-set classifier.

    Args:
        y_true: true labels, as indices into ``classes`` or as class names (N,).
        y_score: class probabilities (N, C) or predicted indices (N,). With probabilities the
            report adds top-5 accuracy (when C > 5) and the confidence of each error.
        classes: class names; the order of every per-class list and of the matrix.
        files: optional names of the N samples; adds ``predictions`` (one row per sample) and
            names the misclassified ones.
        max_misclassified: keep only the most confident errors (``None``: all).

    Returns:
        A JSON-safe dict: ``n``, ``classes``, ``accuracy``, ``top5_accuracy`` (C > 5 and
        probabilities only), ``balanced_accuracy``, ``macro_f1``, ``weighted_f1``, ``per_class``
        [{class, support, accuracy, precision, recall, f1}] (per-class accuracy is the fraction
        of that class's samples predicted right, ``None`` without support), ``confusion``,
        ``confused_pairs`` [{true, predicted, count}] (largest first), ``misclassified``
        [{index, file, true, predicted, confidence, true_prob}] (most confident first) and, with
        ``files``, ``predictions`` [{file, true, predicted, confidence, correct}].
    """
    classes = [str(c) for c in classes]
    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got {classes}")
    y = _label_indices(y_true, classes)
    n = int(y.shape[0])
    if n == 0:
        raise ValueError("no samples to evaluate")
    pred, probs = _predictions(y_score, n, n_classes)
    if files is not None and len(files) != n:
        raise ValueError(f"got {len(files)} file names for {n} samples")
    labels = np.arange(n_classes)

    confusion = metrics.confusion_matrix(y, pred, labels=labels)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y, pred, labels=labels, zero_division=0)
    per_class = [{
        "class": name,
        "support": int(support[i]),
        "accuracy": fnum(confusion[i, i] / support[i]) if support[i] else None,
        "precision": fnum(precision[i]),
        "recall": fnum(recall[i]),
        "f1": fnum(f1[i]),
    } for i, name in enumerate(classes)]

    report: dict[str, Any] = {
        "n": n,
        "classes": classes,
        "accuracy": fnum(metrics.accuracy_score(y, pred)),
    }
    if probs is not None and n_classes > 5:
        report["top5_accuracy"] = fnum(metrics.top_k_accuracy_score(y, probs, k=5, labels=labels))
    # Macro averages over the classes that occur (true or predicted): scikit-learn's default,
    # so that a class absent from this evaluation set does not count as an F1 of zero.
    report["balanced_accuracy"] = fnum(_balanced_accuracy(confusion))
    report["macro_f1"] = fnum(metrics.f1_score(y, pred, average="macro", zero_division=0))
    report["weighted_f1"] = fnum(metrics.f1_score(y, pred, average="weighted", zero_division=0))
    report["per_class"] = per_class
    report["confusion"] = confusion.astype(int).tolist()
    report["confused_pairs"] = confused_pairs(confusion, classes)

    confidence = probs[np.arange(n), pred] if probs is not None else None
    true_prob = probs[np.arange(n), y] if probs is not None else None
    wrong = np.flatnonzero(pred != y)
    if confidence is not None:
        wrong = wrong[np.argsort(-confidence[wrong], kind="stable")]
    if max_misclassified is not None:
        wrong = wrong[:max_misclassified]
    report["misclassified"] = [{
        "index": int(i),
        "file": str(files[i]) if files is not None else None,
        "true": classes[y[i]],
        "predicted": classes[pred[i]],
        "confidence": fnum(confidence[i]) if confidence is not None else None,
        "true_prob": fnum(true_prob[i]) if true_prob is not None else None,
    } for i in wrong]
    if files is not None:
        report["predictions"] = [{
            "file": str(files[i]),
            "true": classes[y[i]],
            "predicted": classes[pred[i]],
            "confidence": fnum(confidence[i]) if confidence is not None else None,
            "correct": bool(pred[i] == y[i]),
        } for i in range(n)]
    return report


def _balanced_accuracy(confusion: np.ndarray) -> float:
    """Mean per-class recall over the classes with support (sklearn's balanced_accuracy)."""
    support = confusion.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(confusion)[present] / support[present]))


def confused_pairs(confusion: Any, classes: Sequence[str], *, min_count: int = 1) -> list[dict[str, Any]]:
    """Off-diagonal cells of a confusion matrix as ``{true, predicted, count}``, largest first.

    Ties are broken by class order, so the list is deterministic.
    """
    matrix = np.asarray(confusion)
    rows, cols = np.nonzero(matrix)
    cells = [(int(matrix[r, c]), int(r), int(c)) for r, c in zip(rows, cols)
             if r != c and matrix[r, c] >= min_count]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [{"true": classes[r], "predicted": classes[c], "count": count} for count, r, c in cells]


def matching_classes(classes: Sequence[str], query: str | None) -> list[int]:
    """Indices of the classes whose name contains ``query`` (case-insensitive; spaces, dashes
    and underscores alike), in class order; every class for an empty query.

    With 100+ classes the Evaluate page's search box narrows the table, the matrix and the
    confused pairs to the people someone is looking for.
    """
    def norm(text: str) -> str:
        return "".join(ch for ch in str(text).lower() if ch not in " -_")

    wanted = norm(query or "")
    return [i for i, name in enumerate(classes) if wanted in norm(name)]


def confusion_order(confusion: Any, *, top: int | None = None,
                    among: Sequence[int] | None = None) -> list[int]:
    """Class indices ordered "most confused first", with confused classes next to each other.

    With 100+ classes a full matrix is unreadable; this ordering puts the errors in the top-left
    corner. Classes are taken pair by pair, from the largest off-diagonal cell (both directions
    summed) down, so the two classes of a confused pair sit side by side; then the classes with
    no confusion follow in their original order.

    Args:
        confusion: square matrix, rows true, columns predicted.
        top: keep only the first ``top`` classes of the ordering.
        among: order only these classes and the classes they are confused with (either
            direction), e.g. the matches of a class search; the others are left out.
    """
    matrix = np.asarray(confusion, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {matrix.shape}")
    off = matrix.copy()
    np.fill_diagonal(off, 0.0)
    if among is not None:
        chosen = np.zeros(matrix.shape[0], dtype=bool)
        chosen[np.asarray(list(among), dtype=np.int64)] = True
        # Keep the cells that touch a chosen class; every other cell is not this search's business.
        off[~chosen[:, None] & ~chosen[None, :]] = 0.0
    symmetric = np.triu(off + off.T, k=1)
    rows, cols = np.nonzero(symmetric)
    pairs = sorted(zip(symmetric[rows, cols], rows, cols), key=lambda p: (-p[0], p[1], p[2]))
    order: list[int] = []
    seen: set[int] = set()
    for _, r, c in pairs:
        for index in (int(r), int(c)):
            if index not in seen:
                seen.add(index)
                order.append(index)
    rest = range(matrix.shape[0]) if among is None else sorted(set(int(i) for i in among))
    order.extend(i for i in rest if i not in seen)
    return order[:top] if top is not None else order


def reorder_confusion(confusion: Any, classes: Sequence[str], *, top: int | None = None,
                      normalise: bool = False, among: Sequence[int] | None = None) -> dict[str, Any]:
    """The confusion matrix restricted to / reordered by :func:`confusion_order`.

    Rows keep their full support when ``top`` cuts columns, so row-normalised values stay the
    fraction of that class's samples (the errors into classes left out are simply not shown).
    ``among`` restricts it to some classes and their confusion partners (see
    :func:`confusion_order`).

    Returns:
        ``{"classes": [...], "matrix": [[...]], "normalised": bool}``.
    """
    matrix = np.asarray(confusion, dtype=np.float64)
    order = confusion_order(matrix, top=top, among=among)
    values = normalise_rows(matrix) if normalise else matrix
    sub = values[np.ix_(order, order)]
    return {
        "classes": [str(classes[i]) for i in order],
        "matrix": [[fnum(v) if normalise else int(v) for v in row] for row in sub],
        "normalised": normalise,
    }


def normalise_rows(confusion: Any) -> np.ndarray:
    """Each row divided by its sum (the class's support); empty rows stay zero."""
    matrix = np.asarray(confusion, dtype=np.float64)
    sums = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros_like(matrix), where=sums > 0)


def pair_errors(report: dict[str, Any], true: str, predicted: str) -> list[dict[str, Any]]:
    """The misclassified samples of one confused pair (``true`` shown as ``predicted``)."""
    return [m for m in report.get("misclassified", [])
            if m["true"] == true and m["predicted"] == predicted]


def class_examples(report: dict[str, Any], name: str, k: int = 5) -> list[dict[str, Any]]:
    """Up to ``k`` correctly classified samples of class ``name``, most confident first
    (what that class looks like, beside the faces mistaken for it). Needs ``predictions``."""
    rows = [p for p in report.get("predictions", []) if p["true"] == name and p["correct"]]
    rows.sort(key=lambda p: -(p["confidence"] or 0.0))
    return rows[:k]
