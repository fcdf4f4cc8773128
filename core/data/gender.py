"""Gender labels from three sources: male/ and female/ folders, CelebA's attribute file, and a
JSON map identity -> gender over identity folders."""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path

from core.data.spec import DatasetError

GENDER_CLASSES = ("female", "male")  # the reference gender model's order
_GENDER_WORDS = {"male": "male", "m": "male", "man": "male", "men": "male", "1": "male",
                 "female": "female", "f": "female", "woman": "female", "women": "female",
                 "-1": "female", "0": "female"}
_CELEBA_ATTR = ("list_attr_celeba.txt", "list_attr_celeba.csv")


def _gender_of(value, where: str) -> str:
    word = str(value).strip().lower()
    if word not in _GENDER_WORDS:
        raise DatasetError(f"{where}: gender {value!r} not understood; use 'male' or 'female'")
    return _GENDER_WORDS[word]


def load_gender_map(gender_map, root: Path) -> dict[str, str] | None:
    if gender_map is None:
        for name in ("gender.json", "genders.json"):
            if (root / name).is_file():
                gender_map = root / name
                break
        else:
            return None
    if isinstance(gender_map, (str, Path)):
        try:
            gender_map = json.loads(Path(gender_map).read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read the gender map {gender_map}: {exc}") from None
    if not isinstance(gender_map, Mapping):
        raise DatasetError("the gender map must be a JSON object {identity: 'male' | 'female'}")
    return {str(k): _gender_of(v, f"gender map entry {k!r}") for k, v in gender_map.items()}


def to_gender(classes: dict[str, list[Path]], gender_map, where: str) -> dict[str, list[Path]]:
    """Regroup class folders into female/male (folder names or identity -> gender map)."""
    out: dict[str, list[Path]] = {g: [] for g in GENDER_CLASSES}
    lowered = {name.lower(): name for name in classes}
    if set(lowered) <= set(GENDER_CLASSES) and gender_map is None:
        for low, name in lowered.items():
            out[low] = classes[name]
        return {g: files for g, files in out.items() if files}
    if gender_map is None:
        raise DatasetError(
            f"task 'gender' needs male/ and female/ class folders, a CelebA list_attr_celeba.txt, "
            f"or a JSON map identity -> gender (gender_map= or gender.json in the folder); "
            f"{where} has classes: {', '.join(sorted(classes)[:10])}")
    unmapped = [name for name in classes if name not in gender_map]
    if unmapped:
        raise DatasetError(f"the gender map has no entry for {len(unmapped)} class folder(s) of "
                           f"{where}: {', '.join(unmapped[:10])}")
    for name, files in classes.items():
        out[gender_map[name]].extend(files)
    return {g: sorted(files) for g, files in out.items() if files}


def find_celeba(root: Path) -> tuple[Path, Path] | None:
    """(attribute file, image folder) when root (or the file given) is a CelebA layout."""
    attr = root if root.is_file() else next((root / n for n in _CELEBA_ATTR if (root / n).is_file()), None)
    if attr is None:
        return None
    base = attr.parent
    for candidate in (base / "img_align_celeba" / "img_align_celeba", base / "img_align_celeba",
                      base / "img_celeba", base / "images"):
        if candidate.is_dir():
            return attr, candidate
    raise DatasetError(f"found {attr.name} but no image folder beside it (expected "
                       f"{base}/img_align_celeba/ holding the listed files)")


def read_celeba(attr: Path, images: Path) -> tuple[dict[str, list[Path]], dict[Path, int] | None, list[str]]:
    """CelebA's Male column -> {gender: files}; the official partition when present."""
    try:
        if attr.suffix == ".csv":
            with open(attr, newline="") as handle:
                rows = list(csv.reader(handle))
            header, body = [h.strip() for h in rows[0][1:]], rows[1:]
        else:
            lines = attr.read_text().splitlines()
            header, body = lines[1].split(), [line.split() for line in lines[2:] if line.strip()]
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {attr}: {exc}") from None
    if "Male" not in header:
        raise DatasetError(f"{attr.name} has no 'Male' column (columns: {', '.join(header[:8])} ...)")
    column = header.index("Male") + 1  # rows start with the file name
    present = {entry.name for entry in os.scandir(images) if entry.is_file()}
    out: dict[str, list[Path]] = {g: [] for g in GENDER_CLASSES}
    missing = 0
    for row in body:
        name = row[0].strip()
        if name not in present:
            missing += 1
            continue
        out[_gender_of(row[column], f"{attr.name}, {name}")].append(images / name)
    notes = [f"{missing} of {len(body)} files listed in {attr.name} are not in {images}"] if missing else []
    partition = None
    part_file = attr.parent / "list_eval_partition.txt"
    if part_file.is_file():
        partition = {}
        for line in part_file.read_text().splitlines():
            fields = line.replace(",", " ").split()
            if len(fields) == 2 and fields[1] in ("0", "1", "2"):
                partition[images / fields[0]] = int(fields[1])
    return {g: files for g, files in out.items() if files}, partition, notes
