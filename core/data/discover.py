"""Find a dataset on disk: its classes, its samples and their train/val/test split.

Layouts (``root`` is what the user points at):

* ``root/<class>/*.jpg``: one folder per class; a seeded, stratified split is made.
* ``root/{train,val[,test]}/<class>/*.jpg``: the folders are the split.
* gender: ``male/`` and ``female/`` class folders; or CelebA's ``list_attr_celeba.txt`` (``Male``
  column, images in a sibling folder such as ``img_align_celeba/``; ``list_eval_partition.txt``,
  when present, gives the split); or identity folders plus a JSON map identity -> gender
  (``gender_map=`` or ``gender.json`` in ``root``); that one is split by person when each gender
  has enough people, so nobody in val/test was seen in training.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from core.data.gender import GENDER_CLASSES, find_celeba, load_gender_map, read_celeba, to_gender
from core.data.spec import SPLITS, TASKS, DatasetError, DatasetSpec
from core.images import IMAGE_EXTENSIONS, iter_image_files

_SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith((".", "__MACOSX")))


def _class_folders(folder: Path, where: str) -> dict[str, list[Path]]:
    """{class name: sorted image files} for the class folders of ``folder``."""
    dirs = _visible_dirs(folder)
    if not dirs:
        loose = iter_image_files(folder, recursive=False)
        if not loose:
            raise DatasetError(f"{where} is empty: expected one folder per class, "
                               f"{where}/<class>/*.jpg")
        raise DatasetError(f"{where} has no class folders ({len(loose)} image files lie directly "
                           f"in it): expected {where}/<class>/*.jpg")
    classes = {}
    for d in dirs:
        files = iter_image_files(d)
        if not files:
            raise DatasetError(f"class folder '{d.name}' in {where} has no images (looked for "
                               f"{', '.join(sorted(IMAGE_EXTENSIONS))}); add photos or remove it")
        classes[d.name] = files
    return classes


def _split_dirs(root: Path) -> dict[str, Path]:
    found = {}
    names = {p.name.lower(): p for p in _visible_dirs(root)}
    for split, aliases in _SPLIT_FOLDERS.items():
        for alias in aliases:
            if alias in names:
                found[split] = names[alias]
                break
    if "train" in found and "val" not in found:
        raise DatasetError(f"{root} has a {found['train'].name}/ folder but no val/ (or valid/, "
                           f"validation/) folder: add one, or put the class folders directly in "
                           f"{root} for a seeded split")
    return found if "train" in found else {}


def _check_split(split) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in split)
    if len(fractions) == 2:
        fractions = (*fractions, 0.0)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6 \
            or fractions[0] <= 0 or fractions[1] <= 0:
        raise DatasetError(f"split must be (train, val[, test]) fractions summing to 1 with train "
                           f"and val > 0, got {tuple(split)}")
    return fractions


def _seeded_split(classes: dict[str, list[Path]], fractions, seed: int, where: str):
    """Per-class shuffle and cut: every class lands in every split with a non-zero fraction.

    Done here rather than with sklearn's train_test_split(stratify=...), which refuses a test
    share smaller than the number of classes and may leave a small class out of val entirely.
    Each class has its own generator (seed + class name), so adding photos of one person does
    not reshuffle everybody else.
    """
    needed = sum(f > 0 for f in fractions)
    names = ", ".join(s for s, f in zip(SPLITS, fractions) if f > 0)
    for name, files in classes.items():
        if len(files) < needed:
            raise DatasetError(f"class '{name}' in {where} has {len(files)} image(s); a {names} "
                               f"split needs at least {needed} per class: add photos or remove it")
    parts: dict[str, list[tuple[Path, int]]] = {s: [] for s in SPLITS}
    for label, (name, files) in enumerate(sorted(classes.items())):
        salt = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)
        order = np.random.default_rng([seed, salt]).permutation(len(files))
        n = len(files)
        n_val = max(1, round(n * fractions[1]))
        n_test = max(1, round(n * fractions[2])) if fractions[2] > 0 else 0
        while n - n_val - n_test < 1:  # tiny class: train gets at least one image
            if n_test >= n_val and n_test > 1:
                n_test -= 1
            else:
                n_val -= 1
        shuffled = [files[i] for i in order]
        parts["val"] += [(p, label) for p in shuffled[:n_val]]
        parts["test"] += [(p, label) for p in shuffled[n_val:n_val + n_test]]
        parts["train"] += [(p, label) for p in shuffled[n_val + n_test:]]
    return parts


def _split_by_person(classes: dict[str, list[Path]], person: dict[Path, str], fractions,
                     seed: int) -> dict[str, list[tuple[Path, int]]] | None:
    """Gender over identity folders: whole people go to val/test, so validation measures
    photos of people the model never saw. None when a gender has too few people to split."""
    needed = sum(f > 0 for f in fractions)
    parts: dict[str, list[tuple[Path, int]]] = {s: [] for s in SPLITS}
    for label, (name, files) in enumerate(sorted(classes.items())):
        people: dict[str, list[Path]] = {}
        for path in files:
            people.setdefault(person[path], []).append(path)
        if len(people) < needed:
            return None
        salt = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)
        order = [sorted(people)[i] for i in np.random.default_rng([seed, salt]).permutation(len(people))]
        queue = iter(order)
        left = len(order)
        for split, fraction in (("val", fractions[1]), ("test", fractions[2])):
            if fraction == 0:
                continue
            # People still owed to later splits: one for train, one for test after val.
            reserve = 1 + (split == "val" and fractions[2] > 0)
            taken = 0
            while left > reserve and (taken == 0 or taken < fraction * len(files)):
                chosen = next(queue)
                parts[split] += [(p, label) for p in people[chosen]]
                taken, left = taken + len(people[chosen]), left - 1
        for chosen in queue:
            parts["train"] += [(p, label) for p in people[chosen]]
    return parts


def _fingerprint(root: Path, samples: dict[str, list[tuple[Path, int]]], classes) -> str:
    """sha1 of (relative path, size, mtime, class) of every photo: stat only, so cheap.

    Independent of the split (seed, fractions), which a run records beside it.
    """
    rows = []
    for split in SPLITS:
        for path, label in samples[split]:
            st = path.stat()
            try:
                rel = path.relative_to(root).as_posix()
            except ValueError:
                rel = path.as_posix()
            rows.append(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\t{classes[label]}\n")
    return hashlib.sha1("".join(sorted(rows)).encode()).hexdigest()[:16]


def discover_dataset(root: str | Path, *, task: str | None = None,
                     split: tuple[float, ...] = (0.8, 0.1, 0.1), seed: int = 0,
                     gender_map: str | Path | Mapping | None = None) -> DatasetSpec:
    """Find the classes, samples and split of a dataset folder.

    Args:
        root: dataset folder (or a CelebA ``list_attr_celeba.txt``).
        task: "identity" or "gender"; None picks gender for male/female folders or CelebA.
        split: train/val/test fractions for a seeded split (ignored when the data is split).
        seed: seed of that split.
        gender_map: identity -> gender (JSON file or dict), for task "gender" over identity
            folders; defaults to ``gender.json`` in ``root`` when it exists.

    Raises:
        DatasetError: missing folder, no images, an empty class folder, a single class, or a
            class too small to split; the message names the folder and the count.
    """
    root = Path(root).expanduser().resolve()
    if task not in (None, *TASKS):
        raise DatasetError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if not root.exists():
        raise DatasetError(f"dataset folder not found: {root}")
    fractions = _check_split(split)
    notes: list[str] = []
    partition = None
    person: dict[Path, str] | None = None  # identity of each photo, for gender over identities
    celeba = find_celeba(root) if task in (None, "gender") else None
    if root.is_file() and celeba is None:
        raise DatasetError(f"{root} is a file; expected a dataset folder (or list_attr_celeba.txt)")
    if celeba is not None:
        attr, images = celeba
        task, root = "gender", attr.parent
        classes, partition, notes = read_celeba(attr, images)
        per_split = None
    else:
        splits = _split_dirs(root)
        per_split = {s: _class_folders(d, str(d)) for s, d in splits.items()} if splits else None
        classes = per_split["train"] if per_split else _class_folders(root, str(root))
        if task is None:
            task = "gender" if {c.lower() for c in classes} <= set(GENDER_CLASSES) else "identity"
        if task == "gender":
            mapping = load_gender_map(gender_map, root)
            if per_split:
                per_split = {s: to_gender(c, mapping, str(splits[s])) for s, c in per_split.items()}
                classes = per_split["train"]
            else:
                if mapping is not None:
                    person = {p: name for name, files in classes.items() for p in files}
                classes = to_gender(classes, mapping, str(root))
    if not classes or not any(classes.values()):
        raise DatasetError(f"no images found in {root}")
    if len(classes) < 2:
        raise DatasetError(f"only one class ('{next(iter(classes))}') in {root}: classification "
                           f"needs at least two classes")
    names = tuple(sorted(classes))
    index = {name: i for i, name in enumerate(names)}
    if per_split:
        for s, found in per_split.items():
            extra = sorted(set(found) - set(names))
            if extra:
                raise DatasetError(f"{s} folder has class(es) not in train: {', '.join(extra)}")
        samples = {s: [(p, index[c]) for c in sorted(per_split.get(s, {}))
                       for p in per_split[s][c]] for s in SPLITS}
        source = "folders"
    elif partition:
        samples = {s: [] for s in SPLITS}
        for name, files in sorted(classes.items()):
            for path in files:
                samples[SPLITS[partition.get(path, 0)]].append((path, index[name]))
        source = "partition"
    else:
        samples = _split_by_person(classes, person, fractions, seed) if person else None
        if person and samples is None:
            notes.append("too few people per gender to split by person: photos were split, so "
                         "one person can be in both train and val")
        if samples is None:
            samples = _seeded_split(classes, fractions, seed, str(root))
        elif person:
            notes.append("split by person: nobody in val/test is in train")
        source = "seeded"
    return DatasetSpec(
        root=root, task=task, classes=names,
        samples=MappingProxyType({s: tuple(v) for s, v in samples.items()}),
        split_source=source, split=fractions, seed=seed,
        fingerprint=_fingerprint(root, samples, names), notes=tuple(notes))
