"""Photo -> faces -> per-run labels; one function for the command line and the dashboard.

    python -m core.predict --run weights/my-run [--run reference:gender] [--gallery people.npz] \\
        [--top-k 5] [--threshold 0.8] photo.jpg folder/ ...

prints one JSON object per image (JSON lines). A photo that cannot be read, or holds no face,
gets a line with a clear ``error`` / ``message`` and the run goes on with the next one.

Models are loaded once per process (:func:`load_predictor`, cached on path, file time and
device), so the dashboard and repeated calls pay for loading only once.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from core.gallery import Gallery, GalleryError, get_embedder
from core.images import ImageError, iter_image_files, load_image

MAX_TOP_K = 5
REFERENCE_PREFIX = "reference:"


# -- loading (cached once per process) -------------------------------------------------------------

def _stamp(path: Path) -> int:
    """Modification time that changes when a run's weights or a gallery file change."""
    if path.is_dir():
        files = [p for p in (path / "checkpoint.pt", path / "run.json") if p.exists()]
        return max((p.stat().st_mtime_ns for p in files), default=0)
    return path.stat().st_mtime_ns


@functools.lru_cache(maxsize=8)
def _load_cached(spec: str, stamp: int, device: str | None) -> Any:
    if spec.endswith(".npz"):
        return Gallery.load(spec)
    from core.runs import load_model

    return load_model(spec, device)


def load_predictor(spec: str | Path, device: str | None = None) -> Any:
    """A loaded run (``runs.load_model``) or a gallery (``.npz``), cached per process.

    Args:
        spec: a run folder, ``reference:gender``, or a gallery ``.npz`` file.
        device: "cpu", "cuda" or None (automatic).

    The cache key includes the file's modification time: retraining into the same folder or
    re-saving a gallery loads the new one.
    """
    text = str(spec)
    if text.startswith(REFERENCE_PREFIX):
        return _load_cached(text, 0, device)
    path = Path(text).expanduser()
    if not path.exists():
        kind = "gallery file" if text.endswith(".npz") else "run folder"
        raise FileNotFoundError(f"{kind} not found: {path}")
    return _load_cached(str(path.resolve()), _stamp(path), device)


def predictor_name(predictor: Any, spec: str | Path | None = None) -> str:
    """A short display name: the run's name, the gallery file's stem, or the spec itself."""
    for attr in ("name", "run_name"):
        value = getattr(predictor, attr, None)
        if isinstance(value, str) and value:
            return value
    if spec is not None:
        text = str(spec)
        return text if text.startswith(REFERENCE_PREFIX) else Path(text).stem if text.endswith(".npz") \
            else Path(text).name
    return "gallery" if isinstance(predictor, Gallery) else type(predictor).__name__


@functools.lru_cache(maxsize=8)
def _gallery_of_run(predictor: Any) -> Gallery | None:
    """The people of an embedding run's training split (once per loaded run and process)."""
    from core.gallery import run_gallery

    return run_gallery(predictor)[0]


# -- faces and crops -------------------------------------------------------------------------------

def crop_settings_of(predictor: Any):
    """The ``CropSettings`` a predictor's crops must be cut with (its training crops)."""
    from core.cache import CropSettings

    settings = getattr(predictor, "crop_settings", None)
    if isinstance(settings, CropSettings):
        return settings
    fields = getattr(predictor, "crop", None)
    if isinstance(settings, Mapping):
        fields = settings
    if isinstance(fields, Mapping) and fields:
        known = {f for f in CropSettings.__dataclass_fields__}
        return CropSettings(**{k: (tuple(v) if isinstance(v, list) else v)
                               for k, v in fields.items() if k in known})
    return CropSettings()


def crop_faces(image: np.ndarray, faces: Sequence[Any], settings: Any) -> np.ndarray:
    """Aligned crops (N, S, S, 3) of ``faces`` in ``image``, cut as the crop cache cuts them."""
    from core.detection import align_face

    size = settings.size
    if not faces:
        return np.zeros((0, size, size, 3), np.uint8)
    return np.stack([align_face(image, face.keypoints, size=size, margin=settings.margin)
                     for face in faces])


def whole_image_crop(image: np.ndarray, settings: Any) -> np.ndarray:
    """The crop a photo gets when no face is found (it is taken to be a tight face crop)."""
    from core.detection import fallback_crop

    return fallback_crop(image, size=settings.size)[None]


# -- prediction ------------------------------------------------------------------------------------

def _top(labels: Sequence[str], values: np.ndarray, k: int) -> list[dict[str, Any]]:
    order = np.argsort(-values, kind="stable")[:k]
    return [{"label": str(labels[i]), "prob": round(float(values[i]), 6)} for i in order]


def predict_crops(predictor: Any, crops: np.ndarray, *, top_k: int,
                 threshold: float | None) -> list[dict[str, Any]]:
    """Per-crop predictions of one predictor (a run's model, a gallery or an embedding run) for
    aligned crops ``(N, H, W, 3)`` uint8: one ``{"top", "recognised", "kind", ...}`` per crop.
    The one place that labels crops, used by :func:`predict_photos` and the live camera."""
    if isinstance(predictor, Gallery):
        embeddings = get_embedder(predictor.embedder, margin=crop_settings_of(predictor).margin)(crops)
        out = []
        for match in predictor.identify(embeddings, top_k=top_k, threshold=threshold):
            out.append({"top": [{"label": t["label"], "prob": t["score"]} for t in match["top"]],
                        "recognised": match["recognised"], "score": match["score"],
                        "threshold": predictor.threshold if threshold is None else float(threshold),
                        "kind": "similarity"})
        return out
    classes = list(predictor.classes)
    k = min(top_k, len(classes))
    gallery = _gallery_of_run(predictor) if getattr(predictor, "is_embedding", False) else None
    if gallery is not None:
        # Embedding run: the head names the person; the cosine similarity of the face to that
        # person's mean training embedding decides "recognised" (open set).
        embeddings = np.asarray(predictor.embed(crops), dtype=np.float32)
        from_emb = getattr(predictor, "predict_proba_from_embeddings", None)
        probs = np.asarray(from_emb(embeddings) if callable(from_emb) else predictor.predict_proba(crops),
                           dtype=np.float64)
        sims = gallery.scores(embeddings)
        column = {name: j for j, name in enumerate(gallery.names)}
        limit = gallery.threshold if threshold is None else float(threshold)
        out = []
        for row, sim in zip(probs, sims):
            top = _top(classes, row, k)
            j = column.get(top[0]["label"])
            score = float(sim[j]) if j is not None else float(sim.max())
            out.append({"top": top, "recognised": bool(score >= limit), "score": round(score, 6),
                        "threshold": limit, "kind": "probability"})
        return out
    # A closed-set classifier always names someone: it has no similarity to threshold.
    probs = np.asarray(predictor.predict_proba(crops), dtype=np.float64)
    out = [{"top": _top(classes, row, k), "recognised": True, "kind": "probability"} for row in probs]
    extras = getattr(predictor, "extras", None)  # e.g. the reference gender model's age
    if callable(extras):
        for entry, extra in zip(out, extras(crops)):
            entry.update(extra)
    return out


def _as_mapping(predictors: Any) -> dict[str, Any]:
    if isinstance(predictors, Mapping):
        return dict(predictors)
    if isinstance(predictors, Gallery) or hasattr(predictors, "predict_proba"):
        predictors = [predictors]
    out: dict[str, Any] = {}
    for p in predictors:
        name = predictor_name(p)
        base, n = name, 2
        while name in out:
            name, n = f"{base}-{n}", n + 1
        out[name] = p
    return out


def _display_name(source: Any, index: int, names: Sequence[str] | None) -> str:
    if names is not None:
        return str(names[index])
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "name", None) or f"image {index + 1}"


def predict_photos(images: Sequence[Any], predictors: Any, *, top_k: int = 5,
                   threshold: float | Mapping[str, float] | None = None, detector: Any = None,
                   names: Sequence[str] | None = None, include_crops: bool = False,
                   fallback: bool = False, detector_config: Any = None) -> list[dict[str, Any]]:
    """Detect every face in every photo and label it with every predictor.

    Args:
        images: paths, raw bytes, file objects (uploads) or RGB arrays.
        predictors: ``{name: predictor}`` or a list of loaded runs / galleries (named after
            the run / "gallery"); may be empty (detection only).
        top_k: labels per face and predictor (at most 5).
        threshold: cosine-similarity threshold for galleries and embedding runs (None: each
            gallery's own); a float for all, or ``{name: float}``. Plain classifiers ignore it
            (closed set: ``recognised`` is always true).
        detector: an ``MTCNN`` (default: the process-wide one).
        names: display names for the images (e.g. upload file names).
        include_crops: add each face's aligned crop (``crop``, a uint8 array; not JSON) for
            display.
        fallback: when no face is found, label the whole image as one face (for photos that
            are already tight face crops); such a face has ``"fallback": true``.
        detector_config: ``DetectorConfig`` (default: the detector's defaults).

    Returns:
        One dict per image: ``{"file", "width", "height", "faces": [{"box", "confidence",
        "keypoints", "predictions": {name: {"top": [{"label", "prob"}], "recognised",
        "kind"}}, ...}], "n_faces"}``, with ``"error"`` (unreadable file; no faces key content)
        or ``"message"`` (no face found) when relevant. ``prob`` is a probability for
        classifier runs and a cosine similarity for galleries (``kind`` says which).
    """
    from core.detection import DetectorConfig, get_detector

    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
    models = _as_mapping(predictors)
    thresholds = dict(threshold) if isinstance(threshold, Mapping) else {n: threshold for n in models}
    unknown = sorted(set(thresholds) - set(models))
    if unknown:
        raise ValueError(f"thresholds given for unknown predictors {unknown}; predictors: {sorted(models)}")
    detector = detector or get_detector()
    config = detector_config or DetectorConfig()

    results: list[dict[str, Any]] = []
    for i, source in enumerate(images):
        entry: dict[str, Any] = {"file": _display_name(source, i, names)}
        results.append(entry)
        try:
            array = load_image(source)
        except ImageError as exc:
            entry.update(error=str(exc), n_faces=0, faces=[])
            continue
        entry.update(width=int(array.shape[1]), height=int(array.shape[0]))
        # One photo at a time: memory is bounded by the largest photo, not by the batch.
        faces = detector.detect([array], config)[0]
        use_fallback = not faces and fallback
        entry["n_faces"] = len(faces)
        if not faces:
            entry["message"] = ("no face found: labelled the whole image as one face"
                                if use_fallback else "no face found in this photo")
            if not use_fallback:
                entry["faces"] = []
                continue
        by_settings: dict[Any, np.ndarray] = {}
        face_rows = [face.to_dict() for face in faces] if faces else [
            {"box": [0.0, 0.0, float(array.shape[1]), float(array.shape[0])], "confidence": None,
             "keypoints": None, "fallback": True}]
        for row in face_rows:
            row["predictions"] = {}
        for name, model in models.items():
            settings = crop_settings_of(model)
            if settings not in by_settings:
                by_settings[settings] = (crop_faces(array, faces, settings) if faces
                                         else whole_image_crop(array, settings))
            try:
                preds = predict_crops(model, by_settings[settings], top_k=top_k,
                                     threshold=thresholds.get(name))
            except GalleryError as exc:
                preds = [{"error": str(exc)}] * len(face_rows)
            for row, pred in zip(face_rows, preds):
                row["predictions"][name] = pred
        if include_crops:
            first = next(iter(by_settings.values()), None)
            if first is None:
                from core.cache import CropSettings

                settings = CropSettings()
                first = crop_faces(array, faces, settings) if faces else whole_image_crop(array, settings)
            for row, crop in zip(face_rows, first):
                row["crop"] = crop
        entry["faces"] = face_rows
    return results


# -- command line ----------------------------------------------------------------------------------

def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core.predict",
        description="Detect and label the faces in photos; prints one JSON object per image.")
    parser.add_argument("images", nargs="+", help="photos or folders of photos")
    parser.add_argument("--run", action="append", default=[], metavar="RUN_DIR",
                        help="a run folder or reference:gender (repeatable)")
    parser.add_argument("--gallery", action="append", default=[], metavar="G.npz",
                        help="a gallery of known people (repeatable)")
    parser.add_argument("--top-k", type=int, default=5, help=f"labels per face (1..{MAX_TOP_K})")
    parser.add_argument("--threshold", type=float, default=None,
                        help="similarity threshold for galleries / embedding runs (default: the "
                             "gallery's own)")
    parser.add_argument("--fallback", action="store_true",
                        help="label the whole image when no face is found (tight face crops)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if not 1 <= args.top_k <= MAX_TOP_K:
        print(f"error: --top-k must be between 1 and {MAX_TOP_K}", file=sys.stderr)
        return 2
    from core.device import select_device

    try:
        device = str(select_device(args.device))
        models: dict[str, Any] = {}
        for spec in [*args.run, *args.gallery]:
            model = load_predictor(spec, device)
            name = predictor_name(model, spec)
            while name in models:
                name += "'"
            models[name] = model
    except (FileNotFoundError, ValueError, GalleryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = _expand(args.images)
    from core.detection import get_detector

    detector = get_detector(device)
    failed = 0
    for path in files:  # one at a time: each line appears as soon as it is ready
        result = predict_photos([path], models, top_k=args.top_k, threshold=args.threshold,
                                detector=detector, fallback=args.fallback)[0]
        failed += "error" in result
        print(json.dumps(result), flush=True)
    return 1 if failed and failed == len(files) else 0


def _expand(items: Iterable[str]) -> list[Path]:
    """Folders become their image files; files named explicitly are kept whatever they hold."""
    return iter_image_files([Path(p) for p in items])


if __name__ == "__main__":
    raise SystemExit(main())
