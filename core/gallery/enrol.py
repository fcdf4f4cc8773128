"""Enrolment: turn photos (a folder of class folders, uploads, a run's training split) into
gallery embeddings, through the crop and embedding caches."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from core.gallery.store import EMBEDDERS, Gallery, GalleryError



Embedder = Callable[[np.ndarray], np.ndarray]


def get_embedder(name: str = "dlib_face", *, margin: float = 0.1) -> Embedder:
    """The function ``crops (N,H,W,3) uint8 -> (N,D) embeddings`` of a named embedder.

    ``margin`` is the crops' ``CropSettings.margin``: dlib re-finds the landmarks inside the
    crop and needs to know where the face sits in it.
    """
    if name == "dlib_face":
        from core.models import embed_faces

        return lambda crops: embed_faces(crops, margin=margin)
    raise GalleryError(f"unknown embedder {name!r}; available: {', '.join(EMBEDDERS)}")


def embedder_key(name: str, crop_settings: Any) -> str:
    """Embedding-cache key: the embedder and everything that shaped its input crop."""
    return f"{name}-{crop_settings.key()}"


def embed_files(paths: Sequence[str | Path], *, embed: Embedder, key: str, cache: Any = None,
                detector: Any = None, batch_size: int = 64,
                callback: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Embeddings of the primary face of each file, through the crop and embedding caches.

    Files are prepared (detected and cropped once, see ``core.prepare``), then embedded in
    batches; vectors already in the embedding cache under ``key`` are not recomputed.

    Args:
        paths: image files.
        embed: crops (N,H,W,3) uint8 -> (N,D).
        key: embedding-cache key (see :func:`embedder_key`).
        cache: a ``CropCache`` (default: the default cache with default settings).
        callback: ``callback(stage, done, total)`` with stage "prepare" or "embed".

    Returns:
        ``{"embeddings": (n_ok, D) float32, "ok": [index into paths], "no_face": [file],
        "errors": [{"file", "error"}]}``.
    """
    from core.cache import CropCache, EmbeddingCache
    from core.prepare import prepare

    paths = [Path(p) for p in paths]
    cache = cache or CropCache()
    prep_cb = (lambda done, total, *_: callback("prepare", done, total)) if callback else None
    summary = prepare(paths, cache, detector=detector, callback=prep_cb)
    failures = {e["file"]: e["error"] for e in summary["errors"]}
    records = cache.lookup_many(paths)
    ok, no_face, errors = [], [], []
    for i, (path, record) in enumerate(zip(paths, records)):
        if record is None:
            errors.append({"file": str(path), "error": failures.get(str(path), "could not be prepared")})
        elif record.error is not None:
            errors.append({"file": str(path), "error": record.error})
        else:
            ok.append(i)
            if record.fallback:
                no_face.append(str(path))
    shas = [records[i].sha for i in ok]
    known = EmbeddingCache(key, root=cache.root).get_or_compute(
        shas, lambda part: embed(cache.crops(part)), chunk=batch_size,
        progress=(lambda done, total: callback("embed", done, total)) if callback else None)
    dim = next(iter(known.values())).shape[0] if known else 0
    embeddings = np.stack([known[s] for s in shas]) if shas else np.zeros((0, dim), np.float32)
    return {"embeddings": embeddings, "ok": ok, "no_face": no_face, "errors": errors}


def class_folders(root: str | Path) -> dict[str, list[Path]]:
    """{person: image files} for a folder of class folders (``root/<person>/*.jpg``)."""
    from core.images import iter_image_files

    root = Path(root).expanduser()
    if not root.is_dir():
        raise GalleryError(f"folder not found: {root}")
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = iter_image_files(folder)
        if files:
            out[folder.name] = files
    if not out:
        raise GalleryError(f"{root} has no class folders with photos: expected {root}/<person>/*.jpg")
    return out


def enrol_folder(root: str | Path, *, gallery: Gallery | None = None, embedder: str = "dlib_face",
                 mode: str = "mean", threshold: float | None = None, cache: Any = None,
                 detector: Any = None,
                 callback: Callable[[str, int, int], None] | None = None) -> tuple[Gallery, dict]:
    """Enrol every person of a folder of class folders (one folder per person).

    Faces go through the crop cache, so enrolling the same photos again costs nothing.

    Returns:
        (the new gallery, ``{"enrolled": {person: photos}, "no_face": [files], "errors": [...]}``).
    """
    from core.cache import CropCache, CropSettings

    people = class_folders(root)
    if gallery is not None and gallery.embedder != embedder:
        raise GalleryError(f"the gallery holds {gallery.embedder} embeddings, not {embedder}")
    settings = CropSettings(**_crop_fields(gallery.crop)) if gallery is not None and gallery.crop \
        else (cache.settings if cache is not None else CropSettings())
    cache = cache if cache is not None and cache.settings == settings else CropCache(
        cache.root if cache is not None else None, settings)
    files = [f for fs in people.values() for f in fs]
    owners = [name for name, fs in people.items() for _ in fs]
    result = embed_files(files, embed=get_embedder(embedder, margin=settings.margin),
                         key=embedder_key(embedder, settings),
                         cache=cache, detector=detector, callback=callback)
    gallery = gallery or Gallery(embedder=embedder, mode=mode, threshold=threshold,
                                 crop=dataclasses.asdict(settings))
    root = Path(root)
    enrolled: dict[str, int] = {}
    for name in people:
        rows = [j for j, i in enumerate(result["ok"]) if owners[i] == name]
        if not rows:
            continue
        gallery = gallery.add(name, result["embeddings"][rows],
                              files=[_relative(files[result["ok"][j]], root) for j in rows])
        enrolled[name] = len(rows)
    if not enrolled:
        raise GalleryError(f"no usable photo in {root}: " +
                           "; ".join(e["error"] for e in result["errors"][:3]))
    return gallery, {"enrolled": enrolled, "no_face": result["no_face"], "errors": result["errors"]}


def enrol_photos(name: str, photos: Iterable[Any], *, gallery: Gallery | None = None,
                 embedder: str = "dlib_face", detector: Any = None,
                 names: Sequence[str] | None = None) -> tuple[Gallery, list[dict]]:
    """Enrol one person from a few photos (paths, bytes, uploads or arrays).

    Each photo's main face (the largest; see ``select_primary``) is used; a photo with no face
    found is taken whole, as a tight face crop. Unreadable photos are reported and skipped.

    Returns:
        (the new gallery, one ``{"file", "faces", "used", "error"}`` per photo).
    """
    from core.cache import CropSettings
    from core.detection import get_detector, select_primary
    from core.images import ImageError, load_image
    from core.predict import crop_faces, whole_image_crop

    gallery = gallery or Gallery(embedder=embedder, crop=dataclasses.asdict(CropSettings()))
    settings = CropSettings(**_crop_fields(gallery.crop)) if gallery.crop else CropSettings()
    detector = detector or get_detector()
    crops, used_files, report = [], [], []
    for i, photo in enumerate(photos):
        label = str(names[i]) if names is not None else (
            Path(photo).name if isinstance(photo, (str, Path)) else getattr(photo, "name", f"photo {i + 1}"))
        try:
            image = load_image(photo)
        except ImageError as exc:
            report.append({"file": label, "faces": 0, "used": None, "error": str(exc)})
            continue
        faces = detector.detect([image], settings.detector_config())[0]
        primary = select_primary(faces)
        crop = crop_faces(image, [primary], settings) if primary else whole_image_crop(image, settings)
        crops.append(crop[0])
        used_files.append(label)
        report.append({"file": label, "faces": len(faces), "error": None,
                       "used": "largest face" if len(faces) > 1 else "face" if faces else "whole image"})
    if not crops:
        raise GalleryError(f"no usable photo to enrol {name!r}: " +
                           "; ".join(r["error"] for r in report[:3] if r["error"]) if report
                           else f"no photos given for {name!r}")
    embeddings = get_embedder(gallery.embedder, margin=settings.margin)(np.stack(crops))
    return gallery.add(name, embeddings, files=used_files), report


def run_gallery(predictor: Any, *, cache: Any = None, detector: Any = None,
                callback: Callable[[str, int, int], None] | None = None) -> tuple[Gallery | None, str]:
    """The gallery of an embedding run: the people of its training split, enrolled.

    The run's training crops and their embeddings are normally in the caches already (training
    put them there), so this costs a cache read. Returns ``(None, "leave-one-out")`` when the run
    does not record a dataset that can still be found.
    """
    from core.cache import CropCache
    from core.data import DatasetError, discover_dataset
    from core.runs import RunError, load_run

    run_dir = getattr(predictor, "run_dir", None)
    arch = getattr(predictor, "arch", None)
    if run_dir is None or arch not in EMBEDDERS:
        return None, "leave-one-out"
    try:
        info = load_run(run_dir).info
        dataset = info.get("dataset") or {}
        spec = discover_dataset(dataset["root"], task=dataset.get("task") or info.get("task"),
                                split=tuple(dataset.get("split") or (0.8, 0.1, 0.1)),
                                seed=int(dataset.get("seed", 0)))
    except (RunError, DatasetError, KeyError, TypeError, OSError):
        return None, "leave-one-out"
    settings = predictor.crop_settings
    cache = CropCache(cache.root if cache is not None else None, settings)
    paths, labels = spec.paths("train"), spec.labels("train")
    result = embed_files(paths, embed=get_embedder(arch, margin=settings.margin),
                         key=embedder_key(arch, settings),
                         cache=cache, detector=detector, callback=callback)
    gallery = Gallery(embedder=arch, crop=dataclasses.asdict(settings))
    ok_labels = np.array([labels[i] for i in result["ok"]])
    for k, name in enumerate(spec.classes):
        rows = np.flatnonzero(ok_labels == k)
        if rows.size:
            gallery = gallery.add(name, result["embeddings"][rows])
    return gallery, f"training split of {spec.root}"


def _crop_fields(crop: dict) -> dict:
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in crop.items()}


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
