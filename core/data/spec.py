"""What a discovered dataset is: :class:`DatasetSpec`, and :class:`DatasetError`."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

TASKS = ("identity", "gender")
SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A discovered dataset. ``samples[split]`` is a tuple of ``(path, label_index)``.

    ``split_source`` is "folders" (train/val/test folders), "partition" (CelebA's partition
    file) or "seeded" (made here from ``split`` and ``seed``). ``fingerprint`` changes when a
    file is added, removed, resized or touched, or a label changes.
    """

    root: Path
    task: str
    classes: tuple[str, ...]
    samples: Mapping[str, tuple[tuple[Path, int], ...]]
    split_source: str
    split: tuple[float, float, float]
    seed: int
    fingerprint: str
    notes: tuple[str, ...] = ()

    def paths(self, split: str) -> list[Path]:
        return [p for p, _ in self._split(split)]

    def labels(self, split: str) -> list[int]:
        return [y for _, y in self._split(split)]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split."""
        out = {}
        for split in SPLITS:
            counts = np.bincount(self.labels(split), minlength=len(self.classes))
            out[split] = {c: int(n) for c, n in zip(self.classes, counts)}
        return out

    def summary(self) -> dict:
        """JSON-ready description to record with a run (no per-file lists)."""
        return {"root": str(self.root), "task": self.task, "classes": list(self.classes),
                "split_source": self.split_source, "split": list(self.split), "seed": self.seed,
                "fingerprint": self.fingerprint, "counts": self.counts(), "notes": list(self.notes)}

    def _split(self, split: str):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        return self.samples[split]
