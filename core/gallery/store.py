"""The gallery itself: known people's embeddings, matching, and the .npz file format.

A gallery holds L2-normalised embeddings with a name each. A query face is compared by cosine
similarity with every person (``mode="mean"``: with the normalised mean of their embeddings;
``mode="all"``: with the best of their embeddings); the best person wins, and below the
threshold the face is "not recognised".

The gallery is immutable: :meth:`Gallery.add` and :meth:`Gallery.remove` return a new one, so a
gallery shared between the users of a dashboard (``st.cache_resource``) cannot be changed under
anybody's feet.

Files are ``.npz`` archives of plain arrays (names and metadata as unicode arrays), read with
``numpy.load(allow_pickle=False)``: loading a gallery never runs pickled code.
"""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

GALLERY_VERSION = 1
MODES = ("mean", "all")
EMBEDDERS = ("dlib_face",)

# Cosine similarity (to a person's mean embedding) above which a dlib_face match is accepted.
# dlib's own rule, Euclidean distance < 0.6 between unit vectors (cos >= 0.82), is far too loose
# here: our faces reach dlib through MTCNN crops (core.models.dlib_face), and their vectors sit
# closer together (impostor pairs: median cos 0.83 on five_celeb). Measured with
# core.evaluate on lfw40 (seed 0: 10 people known, half their photos enrolled, 671 genuine
# probes; the other 9 people, 531 impostor photos), mean mode: EER 0.6% at 0.943, FAR 1% at
# 0.938 (TAR 99.9%); at 0.94: TAR 99.6%, FAR 0.6%. On five_celeb (train enrolled) every val
# photo scores >= 0.95 and 15 lfw40 strangers <= 0.93.
DEFAULT_THRESHOLDS = {"dlib_face": 0.94}


class GalleryError(ValueError):
    """A gallery that cannot be built, read or used as asked; the message is for the user."""


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclasses.dataclass(frozen=True, eq=False)
class Gallery:
    """Known people for one embedder.

    Attributes:
        names: the people, in enrolment order.
        embeddings: (M, D) float32, L2-normalised, one row per enrolled photo.
        labels: (M,) index into ``names`` of each row.
        embedder: the embedder that made the vectors ("dlib_face"); queries must use it too.
        mode: "mean" (compare with each person's mean) or "all" (with each photo, keep the best).
        threshold: cosine similarity under which a face is "not recognised".
        files: where each row came from (file name or "upload"), for display.
        crop: the crop settings (``CropSettings`` fields) the enrolled faces were cut with.
    """

    names: tuple[str, ...] = ()
    embeddings: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), np.float32))
    labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    embedder: str = "dlib_face"
    mode: str = "mean"
    threshold: float | None = None
    files: tuple[str, ...] = ()
    crop: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise GalleryError(f"unknown gallery mode {self.mode!r}; choose one of {', '.join(MODES)}")
        emb = np.asarray(self.embeddings, dtype=np.float32)
        if emb.ndim != 2:
            raise GalleryError(f"embeddings must be (M, D), got shape {emb.shape}")
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if labels.shape[0] != emb.shape[0]:
            raise GalleryError(f"{emb.shape[0]} embeddings but {labels.shape[0]} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.names)):
            raise GalleryError("a label points outside the list of names")
        if len(set(self.names)) != len(self.names):
            raise GalleryError("duplicate names in the gallery")
        files = tuple(self.files) if self.files else ("",) * emb.shape[0]
        if len(files) != emb.shape[0]:
            raise GalleryError(f"{emb.shape[0]} embeddings but {len(files)} file names")
        threshold = self.threshold
        if threshold is None:
            threshold = DEFAULT_THRESHOLDS.get(self.embedder, 0.5)
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "embeddings", _normalise(emb) if emb.size else emb)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "threshold", float(threshold))
        object.__setattr__(self, "crop", dict(self.crop))
        self.embeddings.setflags(write=False)
        self.labels.setflags(write=False)

    # -- shape ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    @property
    def classes(self) -> list[str]:
        """The names, under the attribute name a loaded run uses (so pages treat both alike)."""
        return list(self.names)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1]) if self.embeddings.size else 0

    def counts(self) -> dict[str, int]:
        """Photos enrolled per person."""
        return {name: int(n) for name, n in
                zip(self.names, np.bincount(self.labels, minlength=len(self.names)))}

    def summary(self) -> dict[str, Any]:
        return {"people": len(self.names), "photos": int(self.labels.size), "counts": self.counts(),
                "embedder": self.embedder, "mode": self.mode, "threshold": self.threshold,
                "dim": self.dim}

    # -- changes (each returns a new gallery) ------------------------------------------------
    def replace(self, **changes: Any) -> "Gallery":
        """A copy with some attributes changed, e.g. ``gallery.replace(threshold=0.8)``."""
        return dataclasses.replace(self, **changes)

    def add(self, name: str, embeddings: Any, files: Sequence[str] | None = None) -> "Gallery":
        """A new gallery with ``embeddings`` (K, D) added under ``name`` (new or existing)."""
        name = str(name).strip()
        if not name:
            raise GalleryError("a person needs a name")
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim == 1:
            emb = emb[None]
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise GalleryError(f"no face embeddings to enrol for {name!r}")
        if self.dim and emb.shape[1] != self.dim:
            raise GalleryError(f"embedding size {emb.shape[1]} does not match the gallery's {self.dim}")
        if not np.isfinite(emb).all():
            raise GalleryError(f"embeddings for {name!r} contain NaN or infinite values")
        names = list(self.names)
        if name not in names:
            names.append(name)
        label = names.index(name)
        files = list(files) if files is not None else ["upload"] * emb.shape[0]
        if len(files) != emb.shape[0]:
            raise GalleryError(f"{emb.shape[0]} embeddings but {len(files)} file names")
        old = self.embeddings if self.embeddings.size else np.zeros((0, emb.shape[1]), np.float32)
        return self.replace(names=tuple(names), embeddings=np.vstack([old, emb]),
                            labels=np.concatenate([self.labels, np.full(emb.shape[0], label)]),
                            files=tuple(self.files) + tuple(str(f) for f in files))

    def remove(self, name: str) -> "Gallery":
        """A new gallery without ``name``."""
        if name not in self.names:
            raise GalleryError(f"{name!r} is not in the gallery; enrolled: {', '.join(self.names) or 'nobody'}")
        drop = self.names.index(name)
        keep = self.labels != drop
        remap = np.array([i - (i > drop) for i in range(len(self.names))], dtype=np.int64)
        return self.replace(names=tuple(n for n in self.names if n != name),
                            embeddings=self.embeddings[keep], labels=remap[self.labels[keep]],
                            files=tuple(f for f, k in zip(self.files, keep) if k))

    # -- matching ---------------------------------------------------------------------------
    def prototypes(self) -> np.ndarray:
        """(K, D) normalised mean embedding of each person."""
        sums = np.zeros((len(self.names), self.dim), np.float32)
        np.add.at(sums, self.labels, self.embeddings)
        return _normalise(sums)

    def scores(self, queries: Any) -> np.ndarray:
        """(N, K) cosine similarity of each query embedding to each person."""
        if not self.names:
            raise GalleryError("the gallery is empty: enrol someone first")
        q = _normalise(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if q.shape[1] != self.dim:
            raise GalleryError(f"query embeddings have size {q.shape[1]}, the gallery {self.dim}")
        if self.mode == "mean":
            return q @ self.prototypes().T
        sims = q @ self.embeddings.T  # (N, M): best photo per person
        out = np.full((q.shape[0], len(self.names)), -np.inf, np.float32)
        for k in range(len(self.names)):
            out[:, k] = sims[:, self.labels == k].max(axis=1)
        return out

    def identify(self, queries: Any, *, top_k: int = 5,
                 threshold: float | None = None) -> list[dict[str, Any]]:
        """Who each query is.

        Returns, per query: ``{"top": [{"label", "score"}] (best first, k <= top_k),
        "label": best name or None when not recognised, "score": best similarity,
        "recognised": score >= threshold}``.
        """
        threshold = self.threshold if threshold is None else float(threshold)
        scores = self.scores(queries)
        k = max(1, min(top_k, len(self.names)))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out = []
        for row, idx in zip(scores, order):
            best = float(row[idx[0]])
            recognised = best >= threshold
            out.append({"top": [{"label": self.names[i], "score": round(float(row[i]), 6)} for i in idx],
                        "label": self.names[idx[0]] if recognised else None,
                        "score": round(best, 6), "recognised": bool(recognised)})
        return out

    # -- files ------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The ``.npz`` archive as bytes (what :meth:`save` writes; a page can offer a download)."""
        meta = {"version": GALLERY_VERSION, "embedder": self.embedder, "mode": self.mode,
                "threshold": self.threshold, "crop": self.crop}
        buffer = io.BytesIO()
        np.savez(buffer, names=np.array(self.names, dtype=str).reshape(-1),
                 embeddings=self.embeddings, labels=self.labels,
                 files=np.array(self.files, dtype=str).reshape(-1), meta=np.array(json.dumps(meta)))
        return buffer.getvalue()

    def save(self, path: str | Path) -> Path:
        """Write the gallery atomically (temporary file + ``os.replace``)."""
        from core.runs import write_bytes_atomic

        path = Path(path)
        if path.suffix != ".npz":
            raise GalleryError(f"gallery files end in .npz, got {path.name}")
        write_bytes_atomic(path, self.to_bytes())
        return path

    @classmethod
    def load(cls, source: str | Path | bytes) -> "Gallery":
        """Read a gallery written by :meth:`save` (a path or the file's bytes)."""
        name = Path(source).name if isinstance(source, (str, Path)) else "the gallery file"
        try:
            handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
            with np.load(handle, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            meta = json.loads(str(arrays["meta"]))
        except FileNotFoundError:
            raise GalleryError(f"{name}: no such gallery file") from None
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise GalleryError(f"{name} is not a FaceLab gallery (.npz): {exc}") from None
        if meta.get("version") != GALLERY_VERSION:
            raise GalleryError(f"{name} has gallery version {meta.get('version')}; this FaceLab "
                               f"reads version {GALLERY_VERSION}")
        return cls(names=tuple(arrays["names"].tolist()), embeddings=arrays["embeddings"],
                   labels=arrays["labels"], embedder=meta["embedder"], mode=meta["mode"],
                   threshold=meta["threshold"], files=tuple(arrays["files"].tolist()),
                   crop=meta.get("crop") or {})
