"""Detect, align and cache the face crop of every photo of a dataset, once.

    python -m core.prepare DATA_DIR [--size PX] [--margin M] [--cache DIR] [--batch-size B]
        [--workers W] [--json]

The crop of a photo is its primary face (``select_primary``) aligned on the 5 landmarks; a photo
where MTCNN finds no face (often an already tight celebrity crop) falls back to the whole image.
Everything is keyed by content hash, so a second run, a renamed folder or a second dataset that
shares photos costs only a ``stat()`` per file.

Large datasets: files go through in chunks of ``CHUNK_FILES`` (hashed and looked up in parallel
threads), photos are decoded by ``workers`` threads at most ``workers + 1`` batches ahead of the
detector, and every batch is committed in one transaction. Peak memory is therefore set by the
batch size and the photo size, not by the number of photos, and an interrupted run (Ctrl-C,
SIGKILL, a crash) resumes where it stopped: finished photos are cache hits.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from core.cache import CacheError, CropCache, CropRecord, CropSettings
from core.images import ImageError, iter_image_files, load_image

# Files hashed and looked up per round trip: large enough to amortise SQLite queries, small
# enough that a 200k-photo run holds only a few hundred paths' worth of state at a time.
CHUNK_FILES = 256
# Decoding threads: enough to keep the detector fed (decoding a web photo costs about as much as
# detecting in it on one core), few enough not to starve torch's own threads.
DEFAULT_WORKERS = max(1, min(4, (os.cpu_count() or 2) - 1))

# callback(done, total, info) with info = {"file": str, "status": "cached" | "detected" |
# "no_face" | "error", "n_faces": int}
ProgressCallback = Callable[[int, int, dict], None]


def _message(exc: Exception, path: Path) -> str:
    """The error without the file name prefix: it is cached by content, not by name."""
    text = str(exc)
    prefix = f"{path.name}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _load(item: tuple[Path, str]) -> tuple[Path, str, np.ndarray | Exception]:
    path, sha = item
    try:
        return path, sha, load_image(path)
    except ImageError as exc:
        return path, sha, exc


def _load_batch(batch: list[tuple[Path, str]]) -> list[tuple[Path, str, np.ndarray | Exception]]:
    return [_load(item) for item in batch]


def _crop_for(image: np.ndarray, record: CropRecord, settings: CropSettings) -> np.ndarray:
    from core.detection import align_face, fallback_crop

    if record.primary is None:
        return fallback_crop(image, size=settings.size)
    keypoints = record.faces[record.primary]["keypoints"]
    return align_face(image, keypoints, size=settings.size, margin=settings.margin)


def _detect(detector, images: list[np.ndarray], config) -> list[list | Exception]:
    """Batched detection; if the batch fails, retry one by one so one bad photo costs only itself."""
    try:
        return detector.detect(images, config)
    except Exception:  # noqa: BLE001 - isolate the culprit below, report it as that file's error
        out = []
        for image in images:
            try:
                out.append(detector.detect([image], config)[0])
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out


def _add(path, sha, image, record, settings, to_store, results) -> None:
    try:
        crop = _crop_for(image, record, settings)
    except Exception as exc:  # noqa: BLE001 - one odd photo must not stop a 200k-photo run
        results.append((path, sha, f"cropping failed: {exc}"))  # not cached: retried next run
        return
    to_store.append((record, crop))
    results.append((path, sha, record))


def _process_batch(batch, known: dict[str, CropRecord], cache: CropCache, detector) -> list:
    """Load, detect (unless known), crop and store one batch. Returns [(path, sha, record | error)]."""
    from core.detection import select_primary

    settings = cache.settings
    results, to_store, to_detect = [], [], []
    for path, sha, image in batch:
        if isinstance(image, Exception):
            record = CropRecord(sha, 0, 0, [], 0, False, _message(image, path))
            to_store.append((record, None))
            results.append((path, sha, record))
        elif sha in known and known[sha].error is None:
            old = known[sha]  # detected before at another crop size: only re-align
            primary = None
            if old.faces:
                primary = old.faces.index(max(old.faces, key=_face_score))
            record = CropRecord(sha, old.width, old.height, old.faces, old.n_faces, primary is None,
                                None, primary)
            _add(path, sha, image, record, settings, to_store, results)
        else:
            to_detect.append((path, sha, image))
    if to_detect:
        found = _detect(detector, [image for _, _, image in to_detect], settings.detector_config())
        for (path, sha, image), faces in zip(to_detect, found):
            if isinstance(faces, Exception):
                results.append((path, sha, f"detection failed: {faces}"))  # not cached: retried next run
                continue
            best = select_primary(faces)
            primary = faces.index(best) if best is not None else None
            height, width = image.shape[:2]
            record = CropRecord(sha, width, height, [f.to_dict() for f in faces], len(faces),
                                primary is None, None, primary)
            _add(path, sha, image, record, settings, to_store, results)
    cache.put_many(to_store)
    return results


def _face_score(face: dict) -> float:
    # Same rule as select_primary (largest area weighted by confidence), on stored dicts.
    x1, y1, x2, y2 = face["box"]
    return max(x2 - x1, 0) * max(y2 - y1, 0) * face["confidence"]


def prepare(paths: str | Path | Iterable[str | Path], cache: CropCache | None = None, *,
            detector=None, batch_size: int = 8, callback: ProgressCallback | None = None,
            workers: int | None = None) -> dict:
    """Detect, align and cache the crops of every image under ``paths``.

    Args:
        paths: a dataset folder (searched recursively), image files, or a list of either.
        cache: where crops go and with which settings; default ``CropCache()``.
        detector: an ``MTCNN``; default ``core.detection.get_detector()`` (built only if needed).
        batch_size: photos per ``MTCNN.detect`` call.
        workers: threads hashing and decoding photos (default ``DEFAULT_WORKERS``); at most
            ``workers + 1`` decoded batches are held in memory.
        callback: ``callback(done, total, info)`` after each file (see ``ProgressCallback``).
            To stop early, raise from it (e.g. when a stop flag is set): every batch finished
            so far stays cached, so the next run resumes there.

    Returns:
        ``{"n", "cached", "detected", "no_face": [files], "multi_face": [files],
        "errors": [{"file", "error"}], "seconds", "cache", "settings"}``. ``cached`` counts
        photos already in the cache (cached errors included), ``detected`` the ones processed
        now; ``no_face``, ``multi_face`` and ``errors`` cover all photos.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = DEFAULT_WORKERS if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cache = cache if cache is not None else CropCache()
    files = iter_image_files(paths)
    total = len(files)
    summary = {"n": total, "cached": 0, "detected": 0, "no_face": [], "multi_face": [],
               "errors": [], "seconds": 0.0, "cache": str(cache.root),
               "settings": {**cache.settings.__dict__, "key": cache.settings.key()}}
    start = time.perf_counter()
    done = 0

    def report(path: Path, outcome: CropRecord | str, was_cached: bool) -> None:
        nonlocal done
        done += 1
        if isinstance(outcome, str) or outcome.error is not None:
            error = outcome if isinstance(outcome, str) else outcome.error
            summary["errors"].append({"file": str(path), "error": error})
            status, n_faces = "error", 0
        else:
            status, n_faces = ("no_face" if outcome.fallback else "detected"), outcome.n_faces
            if outcome.fallback:
                summary["no_face"].append(str(path))
            elif outcome.n_faces > 1:
                summary["multi_face"].append(str(path))
        if was_cached:
            summary["cached"] += 1
            status = "cached" if status != "error" else status
        elif status != "error":
            summary["detected"] += 1
        if callback is not None:
            callback(done, total, {"file": str(path), "status": status, "n_faces": n_faces})

    # Decoding threads (PIL and hashlib release the GIL) keep up to `ahead` batches ready while
    # the detector runs: memory holds at most `ahead` decoded batches and one chunk of paths,
    # whatever the dataset's size. Each batch is committed in one transaction, so a killed run
    # keeps every finished batch and the next run starts after them (content-hash keyed).
    ahead = workers + 1
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="facelab-load")
    try:
        for first in range(0, total, CHUNK_FILES):
            chunk = files[first:first + CHUNK_FILES]
            shas = cache.hash_files(chunk, pool=pool)
            complete = cache.lookup_shas(s for s in shas if isinstance(s, str))
            todo, duplicates = [], {}
            for path, sha in zip(chunk, shas):
                if isinstance(sha, OSError):
                    report(path, f"cannot read the file ({sha.strerror or sha})", False)
                elif sha in complete:
                    report(path, complete[sha], True)
                elif sha in duplicates:
                    duplicates[sha].append(path)  # the same photo twice: process it once
                else:
                    duplicates[sha] = []
                    todo.append((path, sha))
            if not todo:
                continue
            if detector is None:
                from core.detection import get_detector

                detector = get_detector()
            known = cache.lookup_detections(sha for _, sha in todo)
            batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
            pending = deque(pool.submit(_load_batch, b) for b in batches[:ahead])
            queued = len(pending)
            while pending:
                loaded = pending.popleft().result()
                if queued < len(batches):
                    pending.append(pool.submit(_load_batch, batches[queued]))
                    queued += 1
                for path, sha, outcome in _process_batch(loaded, known, cache, detector):
                    report(path, outcome, False)
                    for twin in duplicates[sha]:
                        report(twin, outcome, False)
                del loaded
    finally:
        # Stopped (an exception from the callback): drop the batches not started yet.
        pool.shutdown(wait=True, cancel_futures=True)
    summary["seconds"] = round(time.perf_counter() - start, 3)
    return summary


class TqdmProgress:
    """A ``prepare`` callback drawing a tqdm bar (on stderr) with running counts."""

    def __init__(self, **tqdm_kwargs):
        self.kwargs, self.bar = tqdm_kwargs, None
        self.counts: dict[str, int] = {}

    def __call__(self, done: int, total: int, info: dict) -> None:
        if self.bar is None:  # created on the first photo, when the total is known
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="photo", dynamic_ncols=True, **self.kwargs)
        self.counts[info["status"]] = self.counts.get(info["status"], 0) + 1
        self.bar.set_postfix(self.counts, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_summary(summary: dict, root: Path | None = None, limit: int = 10) -> str:
    """A readable multi-line summary of :func:`prepare`'s result."""
    def show(path: str) -> str:
        if root is not None:
            try:
                return str(Path(path).relative_to(root))
            except ValueError:
                pass
        return path

    def listing(items: list[str]) -> list[str]:
        lines = [f"    {show(p)}" for p in items[:limit]]
        if len(items) > limit:
            lines.append(f"    ... and {len(items) - limit} more (--json lists all)")
        return lines

    s, settings = summary, summary["settings"]
    rate = s["n"] / s["seconds"] if s["seconds"] > 0 else 0.0
    lines = [f"FaceLab prepare: {s['n']} photo(s) in {s['seconds']:.1f} s ({rate:.1f} photos/s); "
             f"crops {settings['size']} px, margin {settings['margin']}, cache {s['cache']}",
             f"  prepared now   : {s['detected']} (detected and cropped in this run)",
             f"  already cached : {s['cached']}",
             f"  no face found  : {len(s['no_face'])} (whole image used as the crop)"]
    lines += listing(s["no_face"])
    lines.append(f"  several faces  : {len(s['multi_face'])} (the largest one was cropped)")
    lines += listing(s["multi_face"])
    lines.append(f"  errors         : {len(s['errors'])} (not usable)")
    lines += [f"    {show(e['file'])}: {e['error']}" for e in s["errors"][:limit]]
    if len(s["errors"]) > limit:
        lines.append(f"    ... and {len(s['errors']) - limit} more (--json lists all)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", type=Path, help="dataset folder(s) or image files")
    default = CropSettings()
    parser.add_argument("--size", type=int, default=default.size, help="crop side in pixels (%(default)s)")
    parser.add_argument("--margin", type=float, default=default.margin,
                        help="extra fraction of the face on each side (%(default)s)")
    parser.add_argument("--min-face-size", type=int, default=default.min_face_size,
                        help="smallest face searched, in pixels (%(default)s)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache folder (default $FACELAB_CACHE or ~/.cache/facelab)")
    parser.add_argument("--batch-size", type=int, default=8, help="photos per detector call (%(default)s)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help="threads reading and decoding photos (%(default)s)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.data if not p.exists()]
    if missing:
        parser.error(f"not found: {', '.join(missing)}")
    try:
        settings = CropSettings(size=args.size, margin=args.margin, min_face_size=args.min_face_size)
    except ValueError as exc:
        parser.error(str(exc))
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    cache = CropCache(args.cache, settings)
    detector = None
    if args.device is not None:
        from core.detection import get_detector

        detector = get_detector(args.device)
    progress = TqdmProgress(desc="prepare", file=sys.stderr)
    try:
        summary = prepare(args.data, cache, detector=detector, batch_size=args.batch_size,
                          callback=progress, workers=args.workers)
    except KeyboardInterrupt:
        progress.close()
        print("interrupted: the photos done so far are cached; run again to resume", file=sys.stderr)
        return 130
    except CacheError as exc:
        progress.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress.close()
    if summary["n"] == 0:
        print(f"no images found in {', '.join(map(str, args.data))}", file=sys.stderr)
        return 1
    root = args.data[0] if len(args.data) == 1 and args.data[0].is_dir() else None
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary, root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
