"""Datasets: discovery and splits (``discover``, ``gender``, ``spec``), crops in memory,
transforms and samplers (``loading``). Import from here::

    from core.data import discover_dataset, load_split, build_transforms, make_sampler

``python -m core.data DATA_DIR [--task T] [--seed S]`` prints what would be trained on.
"""
from __future__ import annotations

from core.data.discover import discover_dataset
from core.data.gender import GENDER_CLASSES
from core.data.loading import (BALANCE_MODES, IMAGENET_MEAN, IMAGENET_STD, ClassCapSampler,
                               CropDataset, SplitData, build_transforms, class_counts,
                               load_crops, load_split, make_sampler)
from core.data.spec import SPLITS, TASKS, DatasetError, DatasetSpec

__all__ = [
    "BALANCE_MODES", "GENDER_CLASSES", "IMAGENET_MEAN", "IMAGENET_STD", "SPLITS", "TASKS",
    "ClassCapSampler", "CropDataset", "DatasetError", "DatasetSpec", "SplitData",
    "build_transforms", "class_counts", "discover_dataset", "load_crops", "load_split",
    "make_sampler",
    # core.data.insights (loaded on first use: `python -m core.data.insights` would otherwise
    # import itself twice)
    *(_INSIGHTS := ("Coverage", "Overview", "Suspects", "class_warnings", "dataset_coverage",
                    "dataset_overview", "find_suspects")),
]


def __getattr__(name: str):
    if name in _INSIGHTS:
        from core.data import insights

        return getattr(insights, name)
    raise AttributeError(f"module 'core.data' has no attribute {name!r}")
