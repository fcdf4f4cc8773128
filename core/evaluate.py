"""Evaluate a run (or a gallery) on a labelled folder: the data behind the Evaluate page.

    python -m core.evaluate --run RUN_DIR --data DIR [--unknown DIR] [--gallery G.npz|DIR] \\
        [--json OUT] [--map] [--device auto|cpu|cuda]

``DIR`` holds one folder per class (``DIR/<class>/*.jpg``); folder names are matched to the
run's classes (case, spaces and dashes do not matter), folders that match no class are listed in
``unknown_classes`` and left out. Faces come from the crop cache (prepared on the way, once per
photo); photos with no face found use the whole image and are listed in ``no_face``.

Open set (``--unknown DIR``, photos of people the model does not know): for galleries and
embedding runs. The gallery is ``--gallery`` (a saved ``.npz`` or a folder of class folders to
enrol), else, for a run, its training split (from run.json), else leave-one-out on ``DIR``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core import evaluation as ev
from core.gallery import (Gallery, GalleryError, embed_files, embedder_key, enrol_folder,
                          get_embedder, run_gallery)
from core.predict import crop_settings_of, load_predictor, predictor_name

Callback = Callable[[str, int, int], None]  # (stage, done, total)
_SPLIT_NAMES = {"train", "val", "valid", "validation", "test"}
_GENDER_SYNONYMS = {"m": "male", "man": "male", "men": "male", "males": "male",
                    "f": "female", "woman": "female", "women": "female", "females": "female"}


class EvaluationError(ValueError):
    """An evaluation that cannot run as asked; the message says what to change."""


# -- data ------------------------------------------------------------------------------------------

def _norm(name: str) -> str:
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    return _GENDER_SYNONYMS.get(key, key)


def labelled_files(data_dir: str | Path) -> dict[str, list[Path]]:
    """{folder name: image files} of a folder-per-class directory, with clear errors."""
    from core.images import iter_image_files

    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise EvaluationError(f"data folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if folders and {p.name.lower() for p in folders} <= _SPLIT_NAMES:
        raise EvaluationError(f"{root} holds split folders ({', '.join(p.name for p in folders)}); "
                              f"pass one of them, e.g. {root / folders[-1].name}")
    out = {p.name: iter_image_files(p) for p in folders}
    out = {name: files for name, files in out.items() if files}
    if not out:
        raise EvaluationError(f"{root} has no class folders with images: expected {root}/<class>/*.jpg")
    return out


def match_classes(folders: Sequence[str], classes: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """Map folder names to class indices (case/space/dash-insensitive); return (map, unmatched)."""
    index = {_norm(c): i for i, c in enumerate(classes)}
    mapping, unknown = {}, []
    for folder in folders:
        if _norm(folder) in index:
            mapping[folder] = index[_norm(folder)]
        else:
            unknown.append(folder)
    return mapping, unknown


def _rel(path: Path | str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


# -- model outputs, streamed in batches ------------------------------------------------------------

def _run_outputs(predictor: Any, records: list, cache: Any, *, batch_size: int,
                 want_features: bool, callback: Callback | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities (and optionally features) of the cached crops, batch by batch.

    Only one batch of crops is in memory at a time; the outputs (N x C floats) are what grows.
    """
    probs, feats = [], []
    total = len(records)
    for start in range(0, total, batch_size):
        crops = cache.crops(records[start:start + batch_size])
        probs.append(np.asarray(predictor.predict_proba(crops), dtype=np.float32))
        if want_features:
            fn = getattr(predictor, "features", None) or getattr(predictor, "embed")
            feats.append(np.asarray(fn(crops), dtype=np.float32))
        if callback:
            callback("predict", min(start + batch_size, total), total)
    n_classes = len(predictor.classes)
    out = np.concatenate(probs) if probs else np.zeros((0, n_classes), np.float32)
    return out, (np.concatenate(feats) if feats else None)


def _embed_key(predictor: Any, run_spec: Any, settings: Any) -> str:
    """Embedding-cache key of a run's embedder: shared with galleries for frozen dlib_face."""
    arch = getattr(predictor, "arch", None) or getattr(predictor, "embedder", None)
    if arch == "dlib_face":
        return embedder_key("dlib_face", settings)
    # A fine-tuned embedder's vectors belong to that run's weights only.
    return embedder_key(f"run:{Path(str(run_spec)).resolve()}", settings)


def _embedder_of(predictor: Any) -> Callable[[np.ndarray], np.ndarray]:
    if isinstance(predictor, Gallery):
        return get_embedder(predictor.embedder, margin=crop_settings_of(predictor).margin)
    return predictor.embed


# -- open set ----------------------------------------------------------------------------------------

def _leave_one_out(embeddings: np.ndarray, labels: np.ndarray, n_classes: int,
                   impostors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open-set scores when the probes are also the gallery: each probe is left out of its own
    person's mean, so it is never compared with itself. A person with one photo cannot be
    recognised from it (score -1 for the own class)."""
    e = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    sums = np.zeros((n_classes, e.shape[1]), np.float32)
    np.add.at(sums, labels, e)
    counts = np.bincount(labels, minlength=n_classes)
    protos = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    scores = e @ protos.T
    own = sums[labels] - e
    own_norm = np.linalg.norm(own, axis=1)
    own_score = np.where(counts[labels] > 1, np.sum(e * own, axis=1) / np.maximum(own_norm, 1e-12), -1.0)
    scores[np.arange(len(labels)), labels] = own_score
    imp = impostors / np.maximum(np.linalg.norm(impostors, axis=1, keepdims=True), 1e-12)
    imp_scores = (imp @ protos.T).max(axis=1) if len(imp) else np.zeros(0)
    best = scores.argmax(axis=1)
    return scores.max(axis=1), best == labels, imp_scores


def _open_set(gallery: Gallery | None, known_emb: np.ndarray, known_labels: np.ndarray,
              classes: Sequence[str], impostor_emb: np.ndarray, threshold: float | None) -> dict:
    if gallery is None:
        genuine, correct, impostor = _leave_one_out(known_emb, known_labels, len(classes), impostor_emb)
    else:
        scores = gallery.scores(known_emb)
        names = np.array(gallery.names)
        genuine = scores.max(axis=1)
        correct = names[scores.argmax(axis=1)] == np.array(classes)[known_labels]
        impostor = gallery.scores(impostor_emb).max(axis=1)
        threshold = gallery.threshold if threshold is None else threshold
    return ev.open_set_report(genuine, correct, impostor, threshold=threshold, include_scores=True)


# -- the evaluation ----------------------------------------------------------------------------------

def evaluate_run(run: Any, data_dir: str | Path, *, unknown_dir: str | Path | None = None,
                 gallery: Gallery | str | Path | None = None, device: str | None = None,
                 cache: Any = None, detector: Any = None, callback: Callback | None = None,
                 batch_size: int = 64, embedding_map: bool = False, threshold: float | None = None,
                 max_misclassified: int | None = None) -> dict[str, Any]:
    """Evaluate ``run`` on every photo of a folder-per-class directory.

    Args:
        run: a run folder, ``reference:gender``, a gallery ``.npz``, or a loaded predictor /
            :class:`Gallery`.
        data_dir: ``data_dir/<class>/*.jpg``.
        unknown_dir: photos of people not known to the model (any layout): adds ``open_set``
            (galleries and embedding runs only).
        gallery: the open-set gallery: a :class:`Gallery`, a ``.npz``, or a folder to enrol.
        device, detector: for the model and for preparing uncached photos.
        cache: a ``CropCache`` (its root is used; the crop settings are the run's own).
        callback: ``callback(stage, done, total)``; stages "prepare", "embed", "predict".
        batch_size: crops per forward pass.
        embedding_map: add ``embedding_map`` (t-SNE points of the features / embeddings).
        threshold: open-set operating threshold (default: the gallery's).
        max_misclassified: keep only the most confident errors.

    Returns:
        The :func:`core.evaluation.classification_report` fields plus ``run``, ``task``,
        ``data_dir``, ``unknown_classes`` [{class, n}], ``missing_classes``, ``no_face``,
        ``errors``, ``crop_settings``, ``seconds``; ``binary`` and ``roc_auc`` for two-class
        (gender) runs, with ``subgroups`` when file names carry them (UTKFace); ``open_set``
        (see :func:`core.evaluation.open_set_report`, plus ``gallery_source``) with
        ``unknown_dir``. File names are relative to ``data_dir``.
    """
    from core.cache import CropCache
    from core.prepare import prepare

    started = time.perf_counter()
    predictor = run if not isinstance(run, (str, Path)) else load_predictor(run, device)
    is_gallery = isinstance(predictor, Gallery)
    classes = list(predictor.classes)
    if len(classes) < 2:
        raise EvaluationError(f"the model knows {len(classes)} class(es); evaluation needs at least 2")
    if unknown_dir is not None:  # checked before any work: these fail fast
        if not is_gallery and not getattr(predictor, "is_embedding", False):
            raise EvaluationError(
                "--unknown (open set) needs a gallery or an embedding run (e.g. dlib_face); this "
                f"run is a {getattr(predictor, 'arch', None) or 'plain'} classifier with no "
                "similarity to threshold")
        if not Path(unknown_dir).exists():
            raise EvaluationError(f"unknown-people folder not found: {unknown_dir}")
    settings = crop_settings_of(predictor)
    cache = CropCache(cache.root if cache is not None else None, settings)
    root = Path(data_dir).expanduser().resolve()
    folders = labelled_files(root)
    mapping, unknown = match_classes(list(folders), classes)
    if not mapping:
        raise EvaluationError(f"none of the class folders of {root} ({', '.join(list(folders)[:8])}) "
                              f"matches a class of the model ({', '.join(classes[:8])})")
    files = [f for folder in mapping for f in folders[folder]]
    labels_all = [mapping[folder] for folder in mapping for _ in folders[folder]]

    # Detection + crops once per photo (cached), then the model on the crops only.
    def prep_cb(done: int, total: int, *_: Any) -> None:
        if callback:
            callback("prepare", done, total)

    if is_gallery:
        result = embed_files(files, embed=_embedder_of(predictor),
                             key=embedder_key(predictor.embedder, settings), cache=cache,
                             detector=detector, batch_size=batch_size, callback=callback)
        ok = result["ok"]
        no_face, errors = result["no_face"], result["errors"]
        embeddings = result["embeddings"]
        probs = predictor.scores(embeddings) if len(ok) else np.zeros((0, len(classes)))
        features = embeddings
    else:
        summary = prepare(files, cache, detector=detector, callback=prep_cb)
        records = cache.lookup_many(files)
        failures = {e["file"]: e["error"] for e in summary["errors"]}
        ok = [i for i, r in enumerate(records) if r is not None and r.error is None]
        errors = [{"file": str(f), "error": r.error if r is not None else
                   failures.get(str(f), "could not be prepared")}
                  for f, r in zip(files, records) if r is None or r.error is not None]
        no_face = [str(files[i]) for i in ok if records[i].fallback]
        probs, features = _run_outputs(predictor, [records[i] for i in ok], cache,
                                       batch_size=batch_size, want_features=embedding_map,
                                       callback=callback)
    if not ok:
        raise EvaluationError(f"no usable photo in {root}: " + "; ".join(e["error"] for e in errors[:3]))
    y = np.array([labels_all[i] for i in ok])
    names = [_rel(files[i], root) for i in ok]
    report: dict[str, Any] = {
        "run": predictor_name(predictor, run if isinstance(run, (str, Path)) else None),
        "task": "identity" if is_gallery else getattr(predictor, "task", None),
        "data_dir": str(root),
    }
    report.update(ev.classification_report(y, probs, classes, files=names,
                                           max_misclassified=max_misclassified))
    if is_gallery:
        report["confidence"] = "cosine similarity"
    report["no_face"] = [_rel(f, root) for f in no_face]
    report["errors"] = [{**e, "file": _rel(e["file"], root)} for e in errors]
    report["unknown_classes"] = [{"class": f, "n": len(folders[f])} for f in unknown]
    matched = set(mapping.values())
    report["missing_classes"] = [c for i, c in enumerate(classes) if i not in matched]
    report["crop_settings"] = settings.__dict__.copy()

    if len(classes) == 2 and not is_gallery:
        positive = classes.index("male") if "male" in classes else 1
        ordered = (classes[1 - positive], classes[positive])
        report["binary"] = ev.binary_report((y == positive).astype(int), probs[:, positive],
                                            classes=ordered, groups=ev.subgroups_from_files(names),
                                            include_scores=True)
        report["roc_auc"] = report["binary"]["roc_auc"]

    if unknown_dir is not None:
        report["open_set"] = _evaluate_open_set(
            predictor, run, gallery, files, ok, y, classes, Path(unknown_dir), settings, cache,
            detector, callback, threshold, features if is_gallery else None)

    if embedding_map and features is not None:
        predicted = [classes[i] for i in np.asarray(probs).argmax(axis=1)]
        report["embedding_map"] = ev.embedding_map(features, [classes[i] for i in y], predicted, names)
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def _evaluate_open_set(predictor, run, gallery, files, ok, y, classes, unknown_dir, settings,
                       cache, detector, callback, threshold, known_emb) -> dict:
    from core.images import iter_image_files

    is_gallery = isinstance(predictor, Gallery)
    embed = _embedder_of(predictor)
    key = embedder_key(predictor.embedder, settings) if is_gallery else _embed_key(predictor, run, settings)
    if known_emb is None:
        known = embed_files([files[i] for i in ok], embed=embed, key=key, cache=cache,
                            detector=detector, callback=callback)
        known_emb = np.zeros((len(ok), known["embeddings"].shape[1]), np.float32)
        known_emb[known["ok"]] = known["embeddings"]  # every ok file was prepared already
    unknown_files = iter_image_files(unknown_dir)
    imp = embed_files(unknown_files, embed=embed, key=key, cache=cache, detector=detector,
                      callback=callback)
    if not imp["ok"]:
        raise EvaluationError(f"no usable photo in the unknown-people folder {unknown_dir}")
    # The gallery: given, the predictor itself, the run's training split, or leave-one-out.
    if isinstance(gallery, (str, Path)):
        source = str(gallery)
        gallery = Gallery.load(gallery) if str(gallery).endswith(".npz") else \
            enrol_folder(gallery, embedder=getattr(predictor, "embedder", None) or "dlib_face",
                         cache=cache, detector=detector, callback=callback)[0]
    elif isinstance(gallery, Gallery):
        source = "gallery"
    elif is_gallery:
        gallery, source = predictor, "gallery"
    else:
        gallery, source = run_gallery(predictor, cache=cache, detector=detector, callback=callback)
    report = _open_set(gallery, known_emb, y, classes, imp["embeddings"], threshold)
    report["gallery_source"] = source
    report["unknown_dir"] = str(unknown_dir)
    report["unknown_no_face"] = len(imp["no_face"])
    return report


def report_crops(report: dict[str, Any], files: Sequence[str], *, cache: Any = None) -> list[np.ndarray | None]:
    """The cached face crops of a report's files (``file`` fields, relative to ``data_dir``).

    For the Evaluate page's error review: no detection runs, a crop missing from the cache
    (deleted cache) is ``None``.
    """
    from core.cache import CropCache, CropSettings

    fields = dict(report.get("crop_settings") or {})
    if "thresholds" in fields:
        fields["thresholds"] = tuple(fields["thresholds"])
    store = CropCache(cache.root if cache is not None else None, CropSettings(**fields))
    root = Path(report["data_dir"])
    records = store.lookup_many([root / f for f in files])
    out: list[np.ndarray | None] = []
    for record in records:
        out.append(store.crop(record) if record is not None and record.error is None else None)
    return out


# -- command line ----------------------------------------------------------------------------------

def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.evaluate",
                                     description="Evaluate a run or a gallery on a labelled folder; "
                                                 "prints the report as JSON.")
    parser.add_argument("--run", required=True,
                        help="run folder, reference:gender, or a gallery .npz")
    parser.add_argument("--data", required=True, type=Path, help="folder of class folders")
    parser.add_argument("--unknown", type=Path, default=None,
                        help="photos of people not in the gallery (adds the open-set report)")
    parser.add_argument("--gallery", default=None,
                        help="open-set gallery: a .npz or a folder of class folders to enrol")
    parser.add_argument("--threshold", type=float, default=None, help="open-set threshold")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--map", action="store_true", help="add a t-SNE map of the embeddings")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    from tqdm import tqdm

    from core.device import select_device

    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, dynamic_ncols=True)
        if bar.total != total:
            bar.reset(total=total)
        bar.update(done - bar.n)

    try:
        device = str(select_device(args.device))
        report = evaluate_run(args.run, args.data, unknown_dir=args.unknown, gallery=args.gallery,
                              device=device, callback=progress, batch_size=args.batch_size,
                              embedding_map=args.map, threshold=args.threshold)
    except (EvaluationError, GalleryError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        for bar in bars.values():
            bar.close()
    text = json.dumps(report, indent=1, allow_nan=False)
    if args.json is not None:
        from core.runs import write_bytes_atomic

        write_bytes_atomic(args.json, (text + "\n").encode())
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
