"""Metrics from predictions: pure functions (numpy + scikit-learn) returning JSON-safe dicts.

A page renders these dicts as they are; ``core.evaluate`` produces the predictions they need.
"""
from __future__ import annotations

from .binary import (AGE_BANDS, UTK_RACES, age_band, binary_at_threshold, binary_report,
                     subgroups_from_files, utkface_attributes)
from .classification import (class_examples, classification_report, confused_pairs,
                             confusion_order, matching_classes, normalise_rows, pair_errors,
                             reorder_confusion)
from .embedding_map import embedding_map, map_points
from .open_set import open_set_at_threshold, open_set_report

__all__ = [
    "AGE_BANDS", "UTK_RACES", "age_band", "binary_at_threshold", "binary_report",
    "class_examples", "classification_report", "confused_pairs", "confusion_order", "embedding_map",
    "map_points", "matching_classes", "normalise_rows", "open_set_at_threshold", "open_set_report",
    "pair_errors", "reorder_confusion",
    "subgroups_from_files", "utkface_attributes",
]
