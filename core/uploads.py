"""Uploaded datasets: a zip of class folders, checked, then unpacked under the cache folder only.

    report = save_upload(zip_bytes, name="people.zip")   # -> UploadReport (root, classes, ...)
    train on report.root

Everything is checked from the zip's directory before a byte is written: entries that would land
outside the target (``../``, absolute paths, drive letters, symlinks), absurd sizes or compression
ratios (zip bombs), too many entries, an empty zip, fewer than two class folders. Then each file
is written only if it is an image that really decodes (``core.images.load_image``); other files
are skipped and listed in the report with the reason (a zip with no image at all is refused).
The result goes to ``$FACELAB_CACHE/uploads/<sha1 of the zip>/data`` (the same zip uploaded
twice is unpacked once) and is checked with ``core.data.discover_dataset``.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from core.images import IMAGE_EXTENSIONS, ImageError, load_image

UPLOADS_DIR = "uploads"
REPORT = "report.json"
DATA = "data"
MAX_ZIP_BYTES = 2 * 2**30            # the upload itself
MAX_TOTAL_BYTES = 4 * 2**30          # everything unpacked
MAX_ENTRY_BYTES = 100 * 2**20        # one photo (core.images.MAX_FILE_BYTES)
MAX_ENTRIES = 200_000
# JPEG barely compresses (ratio ~1); PNG of a photo 1-3x. A member that inflates more than
# this, and to more than a megabyte, is a zip bomb, not a photo.
MAX_RATIO = 100
SYSTEM_FILES = {"thumbs.db", "desktop.ini"}
_DRIVE = re.compile(r"^[A-Za-z]:")


class UploadError(ValueError):
    """An upload that cannot be used; the message says why, for the user."""


@dataclasses.dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class UploadReport:
    """What an upload became.

    Args:
        root: the dataset folder to train on (class folders, or train/ val/ folders).
        name: the uploaded file's name; digest: sha1 of its bytes (the folder name).
        classes, counts: class names and photos per class (all splits together).
        n_images: photos kept; skipped: files left out, each with its reason.
        task, split_source: as ``core.data.discover_dataset`` found them.
        reused: the same zip had been unpacked before (nothing was written this time).
    """

    root: Path
    name: str
    digest: str
    classes: tuple[str, ...]
    counts: dict[str, int]
    n_images: int
    skipped: tuple[Skipped, ...] = ()
    task: str = "identity"
    split_source: str = "seeded"
    reused: bool = False

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["root"] = str(self.root)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "UploadReport":
        return cls(**{**data, "root": Path(data["root"]), "classes": tuple(data["classes"]),
                      "skipped": tuple(Skipped(**s) for s in data.get("skipped", ()))})


def uploads_root(cache_root: str | Path | None = None) -> Path:
    from core.cache import default_cache_dir

    return Path(cache_root or default_cache_dir()).expanduser() / UPLOADS_DIR


def _read(source: bytes | str | Path | BinaryIO) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        size = os.path.getsize(source)
        if size > MAX_ZIP_BYTES:
            raise UploadError(f"the zip is {size / 2**30:.1f} GB; the limit is "
                              f"{MAX_ZIP_BYTES / 2**30:.0f} GB")
        return Path(source).read_bytes()
    if hasattr(source, "seek"):
        source.seek(0)
    data = source.read(MAX_ZIP_BYTES + 1)
    if len(data) > MAX_ZIP_BYTES:
        raise UploadError(f"the zip is larger than {MAX_ZIP_BYTES / 2**30:.0f} GB")
    return data


def _parts(name: str) -> list[str]:
    """The path parts of a member name; backslashes count as separators (Windows zips)."""
    return [p for p in re.split(r"[\\/]+", name) if p not in ("", ".")]


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    """Why a member must not be extracted, or None."""
    name = info.filename
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "absolute path"
    if ".." in _parts(name):
        return "'..' leads outside the folder"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    if "\x00" in name:
        return "NUL in the name"
    return None


def _system_file(parts: list[str]) -> bool:
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts) \
        or parts[-1].lower() in SYSTEM_FILES


def _check_directory(zf: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    """All checks on the zip's directory (nothing read or written yet); the file members."""
    members = zf.infolist()
    files = [m for m in members if not m.is_dir()]
    if not files:
        raise UploadError(f"{name} is empty: it holds no files. Zip one folder per class "
                          f"(person), each holding that class's photos.")
    if len(members) > MAX_ENTRIES:
        raise UploadError(f"{name} holds {len(members)} entries; the limit is {MAX_ENTRIES}")
    bad = [(m.filename, why) for m in members if (why := _unsafe(m))]
    if bad:
        shown = "; ".join(f"{n!r} ({why})" for n, why in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise UploadError(f"{name} was refused: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} "
                          f"would be written outside the upload folder: {shown}{more}. Nothing "
                          f"was extracted.")
    total = sum(m.file_size for m in files)
    if total > MAX_TOTAL_BYTES:
        raise UploadError(f"{name} unpacks to {total / 2**30:.1f} GB; the limit is "
                          f"{MAX_TOTAL_BYTES / 2**30:.0f} GB. Nothing was extracted.")
    for m in files:
        ratio = m.file_size / max(1, m.compress_size)
        if m.file_size > 2**20 and ratio > MAX_RATIO:
            raise UploadError(f"{name} was refused: {m.filename!r} inflates {ratio:.0f}x "
                              f"({m.compress_size} -> {m.file_size} bytes), which is a zip bomb, "
                              f"not a photo. Nothing was extracted.")
    return files


def _no_photos(name: str, skipped: list[Skipped]) -> UploadError:
    # Unreadable "photos" first: they are the surprising ones.
    shown = sorted(skipped, key=lambda s: not s.reason.startswith("not a readable"))[:3]
    examples = "; ".join(f"{s.name} ({s.reason})" for s in shown)
    return UploadError(f"{name} holds no photos in class folders ({len(skipped)} file(s) "
                       f"skipped, e.g. {examples}). Zip one folder per class, each holding "
                       f".jpg/.png photos.")


def _check_classes(name: str, members: list[zipfile.ZipInfo]) -> None:
    counts = Counter(_parts(m.filename)[-2] for m in members)
    if len(counts) < 2:
        only = next(iter(counts))
        raise UploadError(f"{name} has only one class folder ('{only}') with photos: training "
                          f"needs at least two classes (one folder per person, or male/ and "
                          f"female/)")


def _dataset_root(base: Path) -> Path:
    """Descend through single wrapping folders (``people.zip`` holding ``people/<class>/``)."""
    root = base
    while True:
        dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        files = [p for p in root.iterdir() if p.is_file()]
        if len(dirs) == 1 and not files and any(p.is_dir() for p in dirs[0].iterdir()):
            root = dirs[0]
        else:
            return root


def save_upload(source: bytes | str | Path | BinaryIO, *, name: str = "upload.zip",
                cache_root: str | Path | None = None) -> UploadReport:
    """Check an uploaded zip of class folders and unpack it under the cache folder.

    Args:
        source: the zip's bytes, its path, or a file object (a Streamlit upload).
        name: the uploaded file's name (for messages).
        cache_root: default ``$FACELAB_CACHE`` (``core.cache.default_cache_dir``).

    Returns:
        :class:`UploadReport` (``root`` is the folder to train on).

    Raises:
        UploadError: not a zip, empty, unsafe entries, too big, no photos, fewer than two
            classes, or a dataset ``discover_dataset`` refuses; nothing is left on disk then.
    """
    import hashlib

    data = _read(source)
    if not data:
        raise UploadError(f"{name} is empty (0 bytes)")
    digest = hashlib.sha1(data).hexdigest()[:16]
    target = uploads_root(cache_root) / digest
    if (target / REPORT).is_file():
        report = UploadReport.from_dict(json.loads((target / REPORT).read_text()))
        return dataclasses.replace(report, name=name, reused=True)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UploadError(f"{name} is not a zip file; upload a .zip of class folders") from None
    with zf:
        files = _check_directory(zf, name)
        skipped: list[Skipped] = []
        wanted: list[zipfile.ZipInfo] = []
        for m in files:
            parts = _parts(m.filename)
            suffix = PurePosixPath(parts[-1]).suffix.lower()
            if _system_file(parts):
                skipped.append(Skipped(m.filename, "system file"))
            elif suffix not in IMAGE_EXTENSIONS:
                skipped.append(Skipped(m.filename, f"not an image ({suffix or 'no extension'})"))
            elif len(parts) < 2:
                skipped.append(Skipped(m.filename, "not in a class folder"))
            elif m.file_size > MAX_ENTRY_BYTES:
                skipped.append(Skipped(m.filename, f"{m.file_size / 2**20:.0f} MB, over the "
                                                   f"{MAX_ENTRY_BYTES // 2**20} MB limit"))
            else:
                wanted.append(m)
        if not wanted:
            raise _no_photos(name, skipped)
        _check_classes(name, wanted)  # cheap, before decoding: once more after it
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=target.parent))
        try:
            report = _extract(zf, wanted, skipped, tmp, name, digest, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    try:
        os.replace(tmp, target)
    except OSError:  # the same zip was unpacked by another upload meanwhile: keep that one
        shutil.rmtree(tmp, ignore_errors=True)
        return dataclasses.replace(report, reused=True)
    return report


def _extract(zf: zipfile.ZipFile, wanted, skipped: list[Skipped], tmp: Path, name: str,
             digest: str, target: Path) -> UploadReport:
    from core.data import DatasetError, discover_dataset

    base = (tmp / DATA).resolve()
    base.mkdir()
    kept = 0
    for m in wanted:
        out = base.joinpath(*_parts(m.filename)).resolve()
        if base not in out.parents:  # belt and braces: _unsafe already refused these
            raise UploadError(f"{name}: {m.filename!r} would be written outside the upload folder")
        with zf.open(m) as handle:
            blob = handle.read(MAX_ENTRY_BYTES + 1)  # bounded by the header's size, checked above
        try:
            load_image(blob)
        except ImageError as exc:
            skipped.append(Skipped(m.filename, f"not a readable image: {exc}"))
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)
        kept += 1
    if not kept:
        raise _no_photos(name, skipped)
    _check_classes(name, [m for m in wanted if m.filename not in {s.name for s in skipped}])
    root = _dataset_root(base)
    try:
        spec = discover_dataset(root)
    except DatasetError as exc:
        raise UploadError(f"{name}: {str(exc).replace(str(base), name)}") from None
    final_root = target / root.relative_to(tmp)
    counts = {c: sum(split[c] for split in spec.counts().values()) for c in spec.classes}
    report = UploadReport(root=final_root, name=name, digest=digest, classes=spec.classes,
                          counts=counts, n_images=sum(counts.values()), skipped=tuple(skipped),
                          task=spec.task, split_source=spec.split_source)
    (tmp / REPORT).write_text(json.dumps(report.to_dict(), indent=2))
    return report


def list_uploads(cache_root: str | Path | None = None) -> list[UploadReport]:
    """Datasets uploaded before (newest first)."""
    root = uploads_root(cache_root)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        file = folder / REPORT
        if file.is_file():
            try:
                found.append((file.stat().st_mtime,
                              UploadReport.from_dict(json.loads(file.read_text()))))
            except (OSError, ValueError, TypeError, KeyError):
                continue  # a half-written or foreign folder: not offered
    return [report for _, report in sorted(found, key=lambda item: item[0], reverse=True)]


def describe(report: UploadReport) -> str:
    """One line for a page: "5 classes, 93 photos (3 files skipped)"."""
    skipped = f" ({len(report.skipped)} file(s) skipped)" if report.skipped else ""
    return f"{len(report.classes)} classes, {report.n_images} photos{skipped}"
