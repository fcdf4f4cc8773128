"""Content-addressed caches for face crops and embeddings, outside the repository.

Storage: SQLite databases under :func:`default_cache_dir` (``$FACELAB_CACHE`` or
``~/.cache/facelab``)::

    crops.sqlite3        files       path -> (size, mtime_ns, sha)   hash memo: re-runs only stat()
                         detections  (sha, detector key) -> width, height, faces JSON, error
                         crops       (sha, crop key) -> primary face, fallback, raw uint8 pixels
    embeddings.sqlite3   embeddings  (model key, sha) -> float32 vector

Why SQLite rather than a JSON index or one file per crop: every batch is one transaction (atomic,
a killed run loses at most the batch in flight, so preparation resumes where it stopped), lookups
are indexed (``WHERE sha IN (...)``, no index loaded into memory: bounded at 200k photos), WAL
mode lets any number of readers (dashboard, training) run beside one writer, and a crop read is
one blob copy (no PNG decode). Detections are keyed by the detector settings only and crops by
the full settings, so changing the crop size or margin re-aligns without re-detecting.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from core.images import content_hash

# Bumped when the meaning of stored records changes (detector or alignment code): old rows
# are then simply never looked up again.
CACHE_VERSION = 1

# SQLite's host-parameter limit is 32766 since 3.32; stay far below it for old builds (999).
_SQL_CHUNK = 500


class CacheError(RuntimeError):
    """The cache folder cannot be used (not writable, not a folder, damaged database)."""


def default_cache_dir() -> Path:
    """``$FACELAB_CACHE`` if set, else ``~/.cache/facelab``."""
    env = os.environ.get("FACELAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "facelab"


def _short_hash(payload: dict) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class CropSettings:
    """Everything that decides what a cached crop looks like; part of the cache key.

    Args:
        size: side of the square aligned crop in pixels.
        margin: extra fraction of the face added on each side (see ``align_face``).
        min_face_size: smallest face MTCNN looks for, in pixels.
        thresholds: MTCNN's P/R/O-Net score thresholds.
    """

    size: int = 160
    margin: float = 0.1
    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.8)

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if not isinstance(self.size, int) or not 16 <= self.size <= 1024:
            raise ValueError(f"crop size must be an integer from 16 to 1024 pixels, got {self.size!r}")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"margin must be a fraction in [0, 1), got {self.margin!r}")
        if not isinstance(self.min_face_size, int) or self.min_face_size < 12:
            # 12 px is PNet's receptive field: it cannot see smaller faces.
            raise ValueError(f"min_face_size must be an integer >= 12, got {self.min_face_size!r}")
        if len(self.thresholds) != 3 or not all(0.0 < t <= 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be three scores in (0, 1], got {self.thresholds!r}")

    def detector_key(self) -> str:
        """Key of the detection step alone (a new crop size reuses the detections)."""
        return _short_hash({"v": CACHE_VERSION, "min_face_size": self.min_face_size,
                            "thresholds": list(self.thresholds)})

    def key(self) -> str:
        """Short stable hash of all settings: the key of a crop."""
        return _short_hash({"v": CACHE_VERSION, **dataclasses.asdict(self),
                            "thresholds": list(self.thresholds)})

    def detector_config(self):
        """The matching ``core.detection.DetectorConfig``."""
        from core.detection import DetectorConfig

        return DetectorConfig(min_face_size=self.min_face_size, thresholds=self.thresholds)


@dataclasses.dataclass(frozen=True)
class CropRecord:
    """What preparation learned about one photo (keyed by the sha1 of its bytes).

    ``faces`` holds every detected face as ``Face.to_dict()``; ``primary`` is the index of the
    face that was cropped (None when there is no face: then ``fallback`` is True and the crop is
    the whole image). ``error`` is set (and there is no crop) when the file could not be read.
    """

    sha: str
    width: int
    height: int
    faces: list[dict]
    n_faces: int
    fallback: bool
    error: str | None = None
    primary: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Store:
    """One SQLite file, one connection per thread and per process (safe after fork)."""

    def __init__(self, path: Path, schema: str):
        self.path = path
        self._schema = schema
        self._local = threading.local()

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # timeout: a second writer (CLI prepare beside the dashboard) waits, not fails.
                conn = sqlite3.connect(self.path, timeout=60.0)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: enough for a cache
                conn.executescript(self._schema)
            except (OSError, sqlite3.Error) as exc:
                raise CacheError(f"cannot open the cache {self.path} ({exc}); point FACELAB_CACHE "
                                 f"(or --cache) at a writable local folder") from exc
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _chunks(items: Sequence, size: int = _SQL_CHUNK):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _hash_or_error(path: str) -> str | OSError:
    try:
        return content_hash(path)
    except OSError as exc:
        return exc


_CROP_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,
    sha TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS detections (sha TEXT, det_key TEXT, width INTEGER, height INTEGER,
    faces TEXT, n_faces INTEGER, error TEXT, PRIMARY KEY (sha, det_key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS crops (sha TEXT, crop_key TEXT, primary_face INTEGER,
    fallback INTEGER, size INTEGER, pixels BLOB);
CREATE UNIQUE INDEX IF NOT EXISTS crops_key ON crops (sha, crop_key);
"""


class CropCache:
    """Aligned face crops and detections, keyed by content hash + :class:`CropSettings`.

    Safe to share between threads and processes (each gets its own connection); concurrent
    readers never block each other. Fill it with :func:`core.prepare.prepare`.

    Args:
        root: cache folder; default :func:`default_cache_dir`.
        settings: the crop settings this view reads and writes.
    """

    def __init__(self, root: str | Path | None = None, settings: CropSettings = CropSettings()):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.settings = settings
        self._det_key = settings.detector_key()
        self._crop_key = settings.key()
        self._store = _Store(self.root / "crops.sqlite3", _CROP_SCHEMA)

    def __repr__(self) -> str:
        return f"CropCache({str(self.root)!r}, {self.settings})"

    # -- hashing ---------------------------------------------------------------------------
    def hash_files(self, paths: Sequence[str | Path], pool=None) -> list[str | OSError]:
        """sha1 of each file, memoised by (path, size, mtime): a re-run only calls stat().

        ``pool`` (a ``concurrent.futures`` executor) hashes new files in parallel (hashlib
        releases the GIL while it reads). Returns, per path, the hex digest or the OSError that
        stopped us reading it.
        """
        conn = self._store.conn()
        keys, stats, out = [], [], []
        for path in paths:
            key = str(Path(path).resolve())
            try:
                st = os.stat(key)
                stats.append((st.st_size, st.st_mtime_ns))
            except OSError as exc:
                stats.append(exc)
            keys.append(key)
        memo: dict[str, tuple] = {}
        for chunk in _chunks(keys):
            rows = conn.execute(f"SELECT path, size, mtime_ns, sha FROM files WHERE path IN "
                                f"({','.join('?' * len(chunk))})", chunk)
            memo.update((row[0], row[1:]) for row in rows)
        todo = [key for key, stat in zip(keys, stats) if not isinstance(stat, OSError)
                and (memo.get(key) is None or memo[key][:2] != stat)]
        hashes = dict(zip(todo, (pool.map if pool is not None else map)(_hash_or_error, todo)))
        fresh = []
        for key, stat in zip(keys, stats):
            if isinstance(stat, OSError):
                out.append(stat)
            elif key in hashes:
                sha = hashes[key]
                out.append(sha)
                if isinstance(sha, str):
                    fresh.append((key, stat[0], stat[1], sha))
            else:
                out.append(memo[key][2])
        if fresh:
            with conn:
                conn.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", fresh)
        return out

    # -- lookups ---------------------------------------------------------------------------
    def lookup_shas(self, shas: Iterable[str]) -> dict[str, CropRecord]:
        """Complete records (with a crop, or with an error) for the given hashes."""
        shas = list(dict.fromkeys(shas))
        conn = self._store.conn()
        found: dict[str, CropRecord] = {}
        for chunk in _chunks(shas):
            rows = conn.execute(
                "SELECT d.sha, d.width, d.height, d.faces, d.n_faces, d.error, c.primary_face,"
                " c.fallback FROM detections d LEFT JOIN crops c ON c.sha = d.sha AND"
                f" c.crop_key = ? WHERE d.det_key = ? AND d.sha IN ({','.join('?' * len(chunk))})",
                [self._crop_key, self._det_key, *chunk])
            for sha, width, height, faces, n_faces, error, primary, fallback in rows:
                if error is None and fallback is None:
                    continue  # detected with these settings, but not yet cropped at this size
                found[sha] = CropRecord(sha, width, height, json.loads(faces), n_faces,
                                        bool(fallback), error, primary)
        return found

    def lookup_detections(self, shas: Iterable[str]) -> dict[str, CropRecord]:
        """Detection-only records (crop possibly missing at this size); ``fallback`` is n_faces==0."""
        shas = list(dict.fromkeys(shas))
        conn = self._store.conn()
        found: dict[str, CropRecord] = {}
        for chunk in _chunks(shas):
            rows = conn.execute(
                "SELECT sha, width, height, faces, n_faces, error FROM detections WHERE"
                f" det_key = ? AND sha IN ({','.join('?' * len(chunk))})", [self._det_key, *chunk])
            for sha, width, height, faces, n_faces, error in rows:
                found[sha] = CropRecord(sha, width, height, json.loads(faces), n_faces,
                                        n_faces == 0, error)
        return found

    def lookup_many(self, paths: Sequence[str | Path]) -> list[CropRecord | None]:
        """Record per path (None when not prepared yet or unreadable from disk)."""
        shas = self.hash_files(paths)
        found = self.lookup_shas(s for s in shas if isinstance(s, str))
        return [found.get(s) if isinstance(s, str) else None for s in shas]

    def get(self, path: str | Path) -> CropRecord | None:
        """Record of one file, or None when it has not been prepared with these settings."""
        return self.lookup_many([path])[0]

    def crop(self, record: CropRecord | str) -> np.ndarray:
        """The ``(size, size, 3)`` uint8 crop of a record (or sha)."""
        return self.crops([record])[0]

    def crops(self, records: Sequence[CropRecord | str], *, channels_first: bool = False,
              out: np.ndarray | None = None) -> np.ndarray:
        """Crops of many records in one pass into one preallocated array.

        Args:
            records: records or shas; every one must have a crop (no error).
            channels_first: return ``(N, 3, S, S)`` (what torch wants) instead of ``(N, S, S, 3)``.
            out: optional array of the right shape to fill (avoids a second copy).
        """
        size = self.settings.size
        shas = [r if isinstance(r, str) else r.sha for r in records]
        shape = (len(shas), 3, size, size) if channels_first else (len(shas), size, size, 3)
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif out.shape != shape or out.dtype != np.uint8:
            raise ValueError(f"out must be a uint8 array of shape {shape}, got {out.dtype} {out.shape}")
        position: dict[str, list[int]] = {}
        for i, sha in enumerate(shas):
            position.setdefault(sha, []).append(i)
        conn = self._store.conn()
        seen = set()
        for chunk in _chunks(list(position)):
            rows = conn.execute(f"SELECT sha, pixels FROM crops WHERE crop_key = ? AND sha IN "
                                f"({','.join('?' * len(chunk))})", [self._crop_key, *chunk])
            for sha, pixels in rows:
                image = np.frombuffer(pixels, dtype=np.uint8).reshape(size, size, 3)
                for i in position[sha]:
                    out[i] = image.transpose(2, 0, 1) if channels_first else image
                seen.add(sha)
        missing = [sha for sha in position if sha not in seen]
        if missing:
            raise KeyError(f"{len(missing)} crop(s) not in the cache {self.root} for settings "
                           f"{self.settings} (first: {missing[0]}); run core.prepare first")
        return out

    # -- writes ----------------------------------------------------------------------------
    def put_many(self, items: Iterable[tuple[CropRecord, np.ndarray | None]]) -> None:
        """Store records and their crops in one transaction (all or nothing).

        A record with an ``error`` has no crop (pass None). A record whose detection is already
        stored (another crop size) only adds its crop.
        """
        size = self.settings.size
        det_rows, crop_rows = [], []
        for record, crop in items:
            det_rows.append((record.sha, self._det_key, record.width, record.height,
                             json.dumps(record.faces), record.n_faces, record.error))
            if record.error is None:
                if crop is None or crop.shape != (size, size, 3) or crop.dtype != np.uint8:
                    got = None if crop is None else (crop.dtype, crop.shape)
                    raise ValueError(f"crop for {record.sha} must be uint8 {(size, size, 3)}, got {got}")
                crop_rows.append((record.sha, self._crop_key, record.primary, int(record.fallback),
                                  size, np.ascontiguousarray(crop).tobytes()))
        conn = self._store.conn()
        with conn:
            conn.executemany("INSERT OR REPLACE INTO detections VALUES (?, ?, ?, ?, ?, ?, ?)", det_rows)
            conn.executemany("INSERT OR REPLACE INTO crops (sha, crop_key, primary_face, fallback,"
                             " size, pixels) VALUES (?, ?, ?, ?, ?, ?)", crop_rows)

    def put(self, record: CropRecord, crop: np.ndarray | None) -> None:
        self.put_many([(record, crop)])

    def stats(self) -> dict:
        """What the cache holds: photos detected and cropped with these settings, disk bytes."""
        conn = self._store.conn()
        detections = conn.execute("SELECT COUNT(*) FROM detections WHERE det_key = ?",
                                  [self._det_key]).fetchone()[0]
        crops = conn.execute("SELECT COUNT(*) FROM crops WHERE crop_key = ?",
                             [self._crop_key]).fetchone()[0]
        size = sum(p.stat().st_size for p in self.root.glob("crops.sqlite3*") if p.is_file())
        return {"root": str(self.root), "settings_key": self._crop_key, "detections": detections,
                "crops": crops, "bytes": size}

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        self._store.close()


_EMBEDDING_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (model_key TEXT, sha TEXT, dim INTEGER, vector BLOB,
    PRIMARY KEY (model_key, sha)) WITHOUT ROWID;
"""


class EmbeddingCache:
    """float32 vectors keyed by (model key, sha): compute an embedding once per crop.

    The model key must name everything that changes the vector, including the crop settings,
    e.g. ``f"dlib_face-{crop_settings.key()}"``; the sha is the photo's content hash
    (``CropRecord.sha``). Usage::

        cache = EmbeddingCache("dlib_face-" + settings.key())
        known = cache.get_many(shas)                      # {sha: (D,) float32}
        todo = [s for s in shas if s not in known]
        cache.put_many(todo, embed(crops_of(todo)))       # (len(todo), D) float32
        # or both steps at once, in chunks:
        known = cache.get_or_compute(shas, lambda part: embed(crops_of(part)))

    Args:
        model_key: short string naming the embedder and its inputs.
        root: cache folder; default :func:`default_cache_dir`.
    """

    def __init__(self, model_key: str, root: str | Path | None = None):
        if not model_key or not isinstance(model_key, str):
            raise ValueError(f"model_key must be a non-empty string, got {model_key!r}")
        self.model_key = model_key
        self.root = Path(root) if root is not None else default_cache_dir()
        self._store = _Store(self.root / "embeddings.sqlite3", _EMBEDDING_SCHEMA)

    def get_many(self, shas: Iterable[str]) -> dict[str, np.ndarray]:
        """Cached vectors for the given shas (missing ones are absent from the dict)."""
        shas = list(dict.fromkeys(shas))
        conn = self._store.conn()
        found = {}
        for chunk in _chunks(shas):
            rows = conn.execute(f"SELECT sha, vector FROM embeddings WHERE model_key = ? AND sha IN "
                                f"({','.join('?' * len(chunk))})", [self.model_key, *chunk])
            found.update((sha, np.frombuffer(blob, dtype=np.float32).copy()) for sha, blob in rows)
        return found

    def put_many(self, shas: Sequence[str], vectors: np.ndarray) -> None:
        """Store ``vectors[i]`` for ``shas[i]`` in one transaction."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(shas):
            raise ValueError(f"vectors must be (len(shas)={len(shas)}, D), got {vectors.shape}")
        rows = [(self.model_key, sha, vectors.shape[1], np.ascontiguousarray(v).tobytes())
                for sha, v in zip(shas, vectors)]
        conn = self._store.conn()
        with conn:
            conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)

    def get_or_compute(self, shas: Sequence[str], compute: Callable[[list[str]], np.ndarray], *,
                       chunk: int = 64,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
        """``{sha: vector}`` for every sha: cached vectors are read, the missing ones computed
        ``chunk`` at a time with ``compute(shas) -> (n, D)`` and stored as they come (a stop
        midway keeps what was done). ``progress(done, total)`` follows the missing ones."""
        known = self.get_many(shas)
        todo = list(dict.fromkeys(s for s in shas if s not in known))
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            vectors = np.asarray(compute(part), dtype=np.float32)
            self.put_many(part, vectors)
            known.update(zip(part, vectors))
            if progress is not None:
                progress(min(start + chunk, len(todo)), len(todo))
        return known

    def get(self, sha: str) -> np.ndarray | None:
        return self.get_many([sha]).get(sha)

    def put(self, sha: str, vector: np.ndarray) -> None:
        self.put_many([sha], np.asarray(vector, dtype=np.float32)[None])

    def close(self) -> None:
        self._store.close()
