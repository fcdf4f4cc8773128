"""Class search and map points for the Evaluate page (core.evaluation): pure functions."""
from __future__ import annotations

import numpy as np

from core import evaluation as ev

CLASSES = ["ben_afflek", "elton_john", "jerry_seinfeld", "madonna", "mindy_kaling"]


def test_matching_classes_ignores_case_spaces_dashes_and_underscores():
    assert ev.matching_classes(CLASSES, "") == list(range(5))
    assert ev.matching_classes(CLASSES, None) == list(range(5))
    assert ev.matching_classes(CLASSES, "MADONNA") == [3]
    assert ev.matching_classes(CLASSES, "elton john") == [1]
    assert ev.matching_classes(CLASSES, "mind-y") == [4]
    assert ev.matching_classes(CLASSES, "n") == [0, 1, 2, 3, 4]
    assert ev.matching_classes(CLASSES, "zz") == []


def test_reorder_confusion_among_keeps_the_partners_of_the_chosen_classes():
    confusion = np.diag([5, 5, 5, 5, 5])
    confusion[3, 1] = 4   # madonna taken for elton_john
    confusion[0, 2] = 2   # ben_afflek taken for jerry_seinfeld: not madonna's business
    view = ev.reorder_confusion(confusion, CLASSES, among=[3])
    assert view["classes"] == ["elton_john", "madonna"]
    assert view["matrix"] == [[5, 0], [4, 5]]
    # A class nobody confuses stays, alone.
    assert ev.reorder_confusion(confusion, CLASSES, among=[4])["classes"] == ["mindy_kaling"]
    # Without a search: every class, most confused first.
    assert ev.confusion_order(confusion) == [1, 3, 0, 2, 4]
    assert ev.confusion_order(confusion, among=[0, 3], top=3) == [1, 3, 0]


def test_map_points_join_confidence_and_follow_a_selection():
    report = {
        "embedding_map": [{"x": 0.0, "y": 1.0, "index": 0, "true": "a", "predicted": "a",
                           "correct": True, "file": "a/1.jpg"},
                          {"x": 2.0, "y": 3.0, "index": 2, "true": "b", "predicted": "a",
                           "correct": False, "file": "b/1.jpg"}],
        "predictions": [{"file": "a/1.jpg", "confidence": 0.9}, {"file": "a/2.jpg", "confidence": 0.8},
                        {"file": "b/1.jpg", "confidence": 0.7}],
    }
    rows = ev.map_points(report)
    assert [(r["file"], r["confidence"]) for r in rows] == [("a/1.jpg", 0.9), ("b/1.jpg", 0.7)]
    # A selection: in its order, duplicates once, indices not on the map (subsampled) skipped.
    assert [r["index"] for r in ev.map_points(report, [2, 1, 0, 2])] == [2, 0]
    assert ev.map_points(report, []) == []
    assert ev.map_points({"embedding_map": report["embedding_map"]})[0]["confidence"] is None
