"""What is in a dataset folder before training on it: class counts per split with warnings,
sample photos per class and image sizes (:func:`dataset_overview`); what the prepare step made
of it (:func:`dataset_coverage`, in ``core.data.coverage``); and suspects worth a look
(:func:`find_suspects`, in ``core.data.suspects``). Plain dataclasses, no Streamlit.

    python -m core.data.insights DATA_DIR [--task T] [--no-prepare] [--threshold D] [--json]

prints all three as a readable summary (``--no-prepare``: the overview only, no detection).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.data.coverage import Coverage, dataset_coverage, face_crops, photo_with_faces
from core.data.discover import discover_dataset
from core.data.spec import SPLITS, DatasetError
from core.data.suspects import NEAR_DUPLICATE_DISTANCE, Suspects, find_suspects
from core.images import IMAGE_EXTENSIONS, ImageError, load_image

# A class with fewer photos than this is "tiny": a 80/10/10 split leaves it one val photo,
# so its val accuracy moves in steps of 100% and the model sees only a handful in training.
TINY_CLASS = 10
# Largest / smallest class above this: the loss is dominated by the large classes unless the
# Train page's class balancing is on (3:1 is where plain training starts to favour the majority
# noticeably in our lfw40 runs, whose classes range from 41 to 530 photos).
IMBALANCE_RATIO = 3.0
SAMPLES_PER_CLASS = 12
# Image sizes are read from at most this many headers (evenly spread over the dataset): about a
# second per 2,000 files on a laptop disk, so a 200k-photo folder still opens in seconds.
MAX_SIZES = 5000

__all__ = ["IMBALANCE_RATIO", "TINY_CLASS", "Coverage", "Overview", "Suspects", "class_warnings",
           "dataset_coverage", "dataset_overview", "face_crops", "find_suspects",
           "image_sizes", "photo_with_faces", "thumbnail"]


@dataclasses.dataclass
class Overview:
    """A dataset at a glance. ``counts[split][class]`` holds only splits with photos.

    ``sizes`` is one ``{"file", "class", "split", "width", "height"}`` per readable photo (as
    stored: EXIF rotation not applied); ``unreadable`` is ``[{"file", "error"}]`` for files whose
    header cannot be read; ``ignored`` lists files in class folders that are not images by their
    extension (they are not part of the dataset).
    """

    root: str
    task: str
    classes: list[str]
    split_source: str
    fingerprint: str
    counts: dict[str, dict[str, int]]
    totals: dict[str, int]
    n_photos: int
    warnings: list[str]
    notes: list[str]
    samples: dict[str, list[str]]
    sizes: list[dict]
    unreadable: list[dict]
    ignored: list[str]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 'es' if word.endswith('s') else 's'}"


def class_warnings(totals: dict[str, int], counts: dict[str, dict[str, int]] | None = None, *,
                   tiny: int = TINY_CLASS, imbalance: float = IMBALANCE_RATIO) -> list[str]:
    """Plain-language warnings about class sizes: tiny classes, imbalance, splits missing a class.

    Args:
        totals: photos per class (all splits).
        counts: photos per class per split (``DatasetSpec.counts()``), for per-split checks.
    """
    out = []
    small = sorted((n, c) for c, n in totals.items() if n < tiny)
    if small:
        listed = ", ".join(f"{c} ({n})" for n, c in small[:8]) + (" ..." if len(small) > 8 else "")
        verb = "has" if len(small) == 1 else "have"
        out.append(f"{_plural(len(small), 'class')} {verb} fewer than {tiny} photos: {listed}. "
                   f"Add photos, or expect noisy accuracy for "
                   f"{'it' if len(small) == 1 else 'them'}.")
    if len(totals) >= 2:
        big = max(totals, key=lambda c: (totals[c], c))
        least = min(totals, key=lambda c: (totals[c], c))
        ratio = totals[big] / max(totals[least], 1)
        if ratio > imbalance:
            out.append(f"Classes are imbalanced: the largest ({big}, {totals[big]} photos) has "
                       f"{ratio:.1f}x the photos of the smallest ({least}, {totals[least]}). "
                       f"Consider class balancing on the Train page.")
    for split, per_class in (counts or {}).items():
        if split == "train" or not any(per_class.values()):
            continue
        absent = [c for c, n in per_class.items() if n == 0]
        if absent:
            out.append(f"The {split} split has no photos of {_plural(len(absent), 'class')}: "
                       f"{', '.join(absent[:8])}{' ...' if len(absent) > 8 else ''}; "
                       f"its accuracy says nothing about them.")
    return out


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header only: PIL's open() does not decode the pixels."""
    if path.stat().st_size == 0:
        raise ImageError("the file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            return image.size
    except UnidentifiedImageError:
        raise ImageError("not an image (or a format that cannot be read)") from None
    except Image.DecompressionBombError:
        raise ImageError("the image is too large to open safely") from None
    except (OSError, ValueError, SyntaxError) as exc:  # damaged headers raise all of these
        raise ImageError(f"cannot read the image header ({exc})") from None


def image_sizes(paths: Sequence[str | Path]) -> tuple[np.ndarray, list[dict]]:
    """Width and height of each file, read from headers (cheap: nothing is decoded).

    Returns:
        ``(sizes, errors)``: an int array (N, 2) of (width, height), -1 for unreadable files,
        and ``[{"file", "error"}]`` for those. A file whose header reads fine may still fail
        to decode (truncated data): the prepare step finds those.
    """
    sizes = np.full((len(paths), 2), -1, dtype=np.int64)
    errors = []
    for i, path in enumerate(paths):
        try:
            sizes[i] = _header_size(Path(path))
        except (ImageError, OSError) as exc:
            errors.append({"file": str(path), "error": str(exc)})
    return sizes, errors


def _ignored_files(root: Path, classes_dirs: set[Path]) -> list[str]:
    """Files in class folders that discovery skipped because they are not images by extension."""
    out = []
    for folder in sorted(classes_dirs):
        for path in folder.rglob("*"):
            if path.is_file() and path.suffix.lower() not in IMAGE_EXTENSIONS \
                    and not path.name.startswith("."):
                out.append(str(path))
    return out


def _spread(files: list, k: int) -> list:
    """``k`` files spread evenly over the sorted list (not just the first k: names often
    group photos by source, so the first few can all be from one shoot)."""
    if len(files) <= k:
        return list(files)
    return [files[i] for i in np.unique(np.linspace(0, len(files) - 1, k).round().astype(int))]


def dataset_overview(root: str | Path, *, task: str | None = None,
                     samples_per_class: int = SAMPLES_PER_CLASS, tiny: int = TINY_CLASS,
                     imbalance: float = IMBALANCE_RATIO) -> Overview:
    """Counts, warnings, samples and image sizes of a dataset folder (no detection).

    Args:
        root: dataset folder (class folders, or train/val[/test] of class folders; gender
            layouts as in :func:`discover_dataset`).
        task: "identity", "gender" or None (guessed, as training does).

    Raises:
        DatasetError: missing folder, no class folders, an empty class, a single class...
    """
    spec = discover_dataset(root, task=task)
    counts = spec.counts()
    totals = {c: sum(counts[s][c] for s in SPLITS) for c in spec.classes}
    shown_counts = {s: v for s, v in counts.items() if any(v.values())}
    rows = [(p, spec.classes[y], s) for s in SPLITS for p, y in spec.samples[s]]
    measured = rows if len(rows) <= MAX_SIZES else _spread(sorted(rows), MAX_SIZES)
    sizes, unreadable = image_sizes([p for p, _, _ in measured])
    notes = list(spec.notes)
    if len(measured) < len(rows):
        notes.append(f"Image sizes were read from {len(measured)} of {len(rows)} photos (evenly "
                     f"spread); the prepare step checks every photo.")
    bad = {e["file"] for e in unreadable}
    per_class: dict[str, list[str]] = {c: [] for c in spec.classes}
    for path, name, _ in sorted(rows):
        if str(path) not in bad:
            per_class[name].append(str(path))
    samples = {c: _spread(files, samples_per_class) for c, files in per_class.items()}
    warnings = class_warnings(totals, shown_counts, tiny=tiny, imbalance=imbalance)
    ignored = _ignored_files(spec.root, {p.parent for p, _, _ in rows})
    if unreadable:
        warnings.append(f"{len(unreadable)} of {len(measured)} files cannot be read as images, e.g. "
                        f"{Path(unreadable[0]['file']).name}: {unreadable[0]['error']}. "
                        f"They will be left out of training.")
    if ignored:
        many = len(ignored) > 1
        warnings.append(f"{len(ignored)} file{'s' if many else ''} in the class folders "
                        f"{'are not images and are' if many else 'is not an image and is'} "
                        f"ignored, e.g. {Path(ignored[0]).name}.")
    return Overview(
        root=str(spec.root), task=spec.task, classes=list(spec.classes),
        split_source=spec.split_source, fingerprint=spec.fingerprint, counts=shown_counts,
        totals=totals, n_photos=len(rows), warnings=warnings, notes=notes,
        samples=samples,
        sizes=[{"file": str(p), "class": c, "split": s, "width": int(w), "height": int(h)}
               for (p, c, s), (w, h) in zip(measured, sizes) if w >= 0],
        unreadable=unreadable, ignored=ignored)


def thumbnail(path: str | Path, max_side: int = 256) -> np.ndarray:
    """A small RGB uint8 copy of a photo (EXIF rotation applied) for display.

    JPEGs are decoded at reduced scale (PIL's draft mode), so a 4000 px photo costs little.

    Raises:
        ImageError: the file cannot be read, with the reason.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max_side, max_side))
            image.thumbnail((max_side, max_side))
            return load_image(image)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        # Let load_image produce the same message the rest of the app gives for this file.
        image = load_image(path)
        from core.render import fit_within

        return fit_within(image, max_side)


# -- command line ----------------------------------------------------------------------------

def _rel(path: str, root: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def format_report(overview: Overview, coverage: Coverage | None = None,
                  suspects: Suspects | None = None, limit: int = 10) -> str:
    """A readable multi-line summary of what :func:`dataset_overview`, :func:`dataset_coverage`
    and :func:`find_suspects` found."""
    o, root = overview, overview.root
    splits = list(o.counts)
    width = max(len(c) for c in o.classes)
    lines = [f"FaceLab dataset {root}: {o.n_photos} photos, {len(o.classes)} classes, task "
             f"{o.task}, split from {o.split_source} (fingerprint {o.fingerprint})",
             "  " + "class".ljust(width) + "".join(s.rjust(8) for s in splits) + "total".rjust(8)]
    for c in o.classes:
        lines.append("  " + c.ljust(width) + "".join(str(o.counts[s][c]).rjust(8) for s in splits)
                     + str(o.totals[c]).rjust(8))
    if o.sizes:
        w = np.array([s["width"] for s in o.sizes])
        h = np.array([s["height"] for s in o.sizes])
        lines.append(f"  image sizes: width {w.min()}..{w.max()} (median {int(np.median(w))}), "
                     f"height {h.min()}..{h.max()} (median {int(np.median(h))})")
    lines += [f"  note: {n}" for n in o.notes]
    lines += [f"  warning: {w}" for w in o.warnings]
    for e in o.unreadable[:limit]:
        lines.append(f"    unreadable {_rel(e['file'], root)}: {e['error']}")
    if coverage is not None:
        c = coverage
        lines.append(f"Coverage ({c.n} photos; {c.prepared_now} prepared now, {c.cached} cached, "
                     f"{c.seconds:.1f} s): faces found {len(c.faces)} (several faces: "
                     f"{len(c.multi_face)}), whole-image fallbacks {len(c.fallback)}, "
                     f"unreadable {len(c.unreadable)}")
        for title, items in (("several faces", c.multi_face),
                             ("no face (whole image used)", c.fallback)):
            lines += [f"    {title}: {_rel(p, root)}" for p in items[:limit]]
        lines += [f"    unreadable: {_rel(e['file'], root)}: {e['error']}"
                  for e in c.unreadable[:limit]]
    if suspects is not None:
        s = suspects
        lines.append(f"Suspects ({s.n_embedded} faces embedded with dlib_face; near-duplicate "
                     f"distance < {s.threshold}):")
        lines.append(f"  exact duplicates: {len(s.exact_duplicates)} group(s)")
        for group in s.exact_duplicates[:limit]:
            lines.append("    " + " = ".join(_rel(f, root) for f in group["files"])
                         + "".join(f"  [{flag}]" for flag in group["flags"]))
        lines.append(f"  near duplicates: {len(s.near_duplicates)} pair(s)")
        for pair in s.near_duplicates[:limit]:
            lines.append(f"    {pair['distance']:.3f}  {_rel(pair['a'], root)} ~ "
                         f"{_rel(pair['b'], root)}"
                         + "".join(f"  [{flag}]" for flag in pair["flags"]))
        lines.append(f"  possible mislabels: {len(s.mislabels)}")
        for m in s.mislabels[:limit]:
            lines.append(f"    {_rel(m['file'], root)}: labelled {m['label']}, closer to "
                         f"{m['closer_to']} (margin {m['margin']:+.3f}; neighbours "
                         f"{', '.join(f'{k} {v}' for k, v in m['neighbours'].items())})")
        lines += [f"  note: {n}" for n in s.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.data.insights",
                                     description="Class counts, coverage and suspects of a dataset.")
    parser.add_argument("data", help="dataset folder")
    parser.add_argument("--task", choices=("identity", "gender"), default=None)
    parser.add_argument("--no-prepare", action="store_true",
                        help="overview only: no detection, no embeddings")
    parser.add_argument("--threshold", type=float, default=NEAR_DUPLICATE_DISTANCE,
                        help="near-duplicate embedding distance (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        overview = dataset_overview(args.data, task=args.task)
        coverage = suspects = None
        if not args.no_prepare:
            def progress(stage: str, done: int, total: int) -> None:
                if not sys.stderr.isatty():
                    return  # a log file wants the summary, not hundreds of progress lines
                print(f"\r{stage}: {done}/{total}", end="" if done < total else "\n",
                      file=sys.stderr, flush=True)

            coverage = dataset_coverage(args.data, task=args.task, callback=progress)
            suspects = find_suspects(args.data, task=args.task, threshold=args.threshold,
                                     callback=progress)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"overview": overview.to_dict(),
                          "coverage": coverage and dataclasses.asdict(coverage),
                          "suspects": suspects and dataclasses.asdict(suspects)}, indent=2))
    else:
        print(format_report(overview, coverage, suspects))
    return 0


if __name__ == "__main__":
    sys.exit(main())
