"""Photos worth a look before training: exact duplicates (same bytes), near duplicates (the same
face photo re-encoded, resized or re-cropped) and possible mislabels (a face that sits closer to
another class than to its own).

Near duplicates and mislabels compare dlib's pretrained 128-D face embeddings
(``core/models/dlib_face.py``) of the cached crops, through :class:`core.cache.EmbeddingCache`
under the same key as training and galleries, so a second look costs no embedding.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from core.cache import CropCache, EmbeddingCache
from core.data.coverage import StageCallback, _spec, dataset_rows
from core.data.spec import DatasetError

# Embedding distance (unit vectors) under which two different files are called near duplicates.
# Measured on five_celeb: the three closest pairs of distinct files (0.078, 0.108, 0.122) are the
# same web photo cropped or encoded differently; the closest genuinely different photos of one
# person are 0.159 and 0.174 apart; a photo re-saved as JPEG quality 60 lands at 0.092 from its
# original, quality 40 at 80% size at 0.144. Different people are >= 0.38 apart.
NEAR_DUPLICATE_DISTANCE = 0.15
NEIGHBOURS = 5          # k of the nearest-neighbour vote
MAX_PAIRS = 2000        # near-duplicate pairs kept (closest first): bounds memory and the page
_ROW_BLOCK_FLOATS = 1 << 24  # rows x N similarity floats per block (64 MB)
_EMBED_CHUNK = 32


@dataclasses.dataclass
class Suspects:
    """What :func:`find_suspects` found; every entry names dataset paths.

    ``exact_duplicates``: ``[{"sha", "files", "classes", "splits", "flags"}]`` (a flag says when
    the copies carry different labels or sit in different splits). ``near_duplicates``:
    ``[{"a", "b", "distance", "class_a", "class_b", "split_a", "split_b", "flags"}]``, closest
    first. ``mislabels``: ``[{"file", "label", "split", "closer_to", "margin", "own_distance",
    "other_distance", "neighbours", "example", "reason"}]``, largest margin first; ``margin`` is
    (distance to its own class centre) - (distance to the nearest other class centre), so > 0
    means closer to the other class; ``neighbours`` counts the classes of its k nearest faces;
    ``example`` is the nearest face of ``closer_to``.
    """

    exact_duplicates: list[dict]
    near_duplicates: list[dict]
    mislabels: list[dict]
    n_photos: int
    n_embedded: int
    not_embedded: int
    threshold: float
    neighbours: int
    rule: str
    notes: list[str]


def embedder_key(cache: CropCache) -> str:
    # The gallery's and training's key for dlib vectors: all three share them.
    from core.gallery.enrol import embedder_key as key

    return key("dlib_face", cache.settings)


def embed_records(shas: list[str], cache: CropCache, *,
                  callback: StageCallback | None = None) -> np.ndarray:
    """dlib embeddings (N, 128) of cached crops by sha, computing only those not yet cached."""
    def embed(part: list[str]) -> np.ndarray:
        # Imported only when something is missing: torch and dlib take seconds to load.
        from core.models.dlib_face import embed_faces

        return embed_faces(cache.crops(part), margin=cache.settings.margin)

    progress = (lambda done, total: callback("embed", done, total)) if callback else None
    known = EmbeddingCache(embedder_key(cache), root=cache.root).get_or_compute(
        shas, embed, chunk=_EMBED_CHUNK, progress=progress)
    if not shas:
        return np.zeros((0, 128), np.float32)
    vectors = np.stack([known[s] for s in shas]).astype(np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _flags(class_a: str, class_b: str, split_a: str, split_b: str) -> list[str]:
    out = []
    if class_a != class_b:
        out.append(f"labelled {class_a} and {class_b}")
    if split_a != split_b:
        out.append(f"in {split_a} and {split_b}: a leak between splits")
    return out


def exact_duplicates(files: list[str], shas: list[str], classes: list[str],
                     splits: list[str]) -> list[dict]:
    """Groups of files with the same content hash (largest groups first)."""
    groups: dict[str, list[int]] = {}
    for i, sha in enumerate(shas):
        groups.setdefault(sha, []).append(i)
    out = []
    for sha, members in groups.items():
        if len(members) < 2:
            continue
        cls = sorted({classes[i] for i in members})
        spl = sorted({splits[i] for i in members})
        flags = _flags(cls[0], cls[-1], spl[0], spl[-1]) if len(cls) > 1 or len(spl) > 1 else []
        if len(cls) > 2:
            flags[0] = f"labelled {', '.join(cls)}"
        out.append({"sha": sha, "files": [files[i] for i in members], "classes": cls,
                    "splits": spl, "flags": flags})
    return sorted(out, key=lambda g: (-len(g["files"]), g["files"][0]))


def _blocks(n: int):
    rows = max(1, _ROW_BLOCK_FLOATS // max(n, 1))
    for start in range(0, n, rows):
        yield start, min(n, start + rows)


def neighbours_and_pairs(emb: np.ndarray, groups: np.ndarray, k: int, threshold: float):
    """k nearest neighbours of every row, and the pairs (i < j) closer than ``threshold``.

    Rows with the same ``groups`` id (the same file content) are neither neighbours nor pairs.
    Computed block by block, so memory stays bounded for large datasets.

    Returns:
        ``(index (N, k) int, -1 where there is no k-th other file; distance (N, k) float;
        pairs [(i, j, distance)])``.
    """
    n = len(emb)
    k = min(k, max(n - 1, 0))
    index = np.zeros((n, k), np.int64)
    dist = np.zeros((n, k), np.float32)
    pairs = []
    for start, stop in _blocks(n):
        sim = emb[start:stop] @ emb.T
        same = groups[start:stop, None] == groups[None, :]
        d = np.sqrt(np.clip(2.0 - 2.0 * sim, 0.0, None))
        d[same] = np.inf
        if k:
            part = np.argpartition(d, k - 1, axis=1)[:, :k]
            part_d = np.take_along_axis(d, part, axis=1)
            order = np.argsort(part_d, axis=1)
            best = np.take_along_axis(part, order, axis=1)
            best_d = np.take_along_axis(part_d, order, axis=1)
            index[start:stop] = np.where(np.isfinite(best_d), best, -1)  # too few other files
            dist[start:stop] = best_d
        rows, cols = np.nonzero(d < threshold)
        rows = rows + start
        keep = cols > rows
        rows, cols = rows[keep], cols[keep]
        pairs += zip(rows.tolist(), cols.tolist(), d[rows - start, cols].tolist())
    pairs.sort(key=lambda p: p[2])
    return index, dist, pairs


def possible_mislabels(emb: np.ndarray, labels: np.ndarray, n_classes: int, index: np.ndarray,
                       *, rule: str = "either") -> list[dict]:
    """Rows closer to another class than to their own, by class centre and/or neighbour vote.

    The own class centre leaves the row out (with few photos per class a photo pulls its own
    centre towards itself). Centres are normalised means. ``rule``: "either" flags a row when
    the nearest other centre is closer than its own, or when most of its k neighbours belong to
    one other class; "both" needs both (gender: the face embedder was not made to separate it).

    Returns rows ``{"row", "closer_to" (class index), "margin", "own_distance",
    "other_distance", "votes" {class index: count}}``, largest margin first.
    """
    if rule not in ("either", "both"):
        raise ValueError(f"unknown rule {rule!r}; choose either or both")
    n = len(emb)
    if n == 0:
        return []
    onehot = np.zeros((n, n_classes), np.float32)
    onehot[np.arange(n), labels] = 1.0
    sums, counts = onehot.T @ emb, onehot.sum(0)
    centres = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    own = sums[labels] - emb  # leave-one-out
    own /= np.maximum(np.linalg.norm(own, axis=1, keepdims=True), 1e-12)
    d_all = np.sqrt(np.clip(2.0 - 2.0 * emb @ centres.T, 0.0, None))
    d_all[:, counts == 0] = np.inf
    d_all[np.arange(n), labels] = np.inf
    d_own = np.sqrt(np.clip(2.0 - 2.0 * (emb * own).sum(1), 0.0, None))
    judged = counts[labels] > 1  # alone in its class: no centre to compare with
    nearest = d_all.argmin(1)
    margin = d_own - d_all[np.arange(n), nearest]
    by_centre = judged & (margin > 0)
    k = index.shape[1]
    votes = np.zeros((n, n_classes), np.int64)
    if k:
        valid = (index >= 0).ravel()
        rows = np.repeat(np.arange(n), k)[valid]
        np.add.at(votes, (rows, labels[index.ravel()[valid]]), 1)
    other_votes = votes.copy()
    other_votes[np.arange(n), labels] = -1
    vote_class = other_votes.argmax(1)
    by_vote = judged & (k > 0) & (other_votes[np.arange(n), vote_class] * 2 > k)
    flagged = (by_centre | by_vote) if rule == "either" else (by_centre & by_vote)
    out = []
    for i in np.nonzero(flagged)[0]:
        closer = int(nearest[i]) if by_centre[i] else int(vote_class[i])
        out.append({"row": int(i), "closer_to": closer, "margin": float(margin[i]),
                    "own_distance": float(d_own[i]), "other_distance": float(d_all[i, closer]),
                    "reason": "centre and neighbours" if by_centre[i] and by_vote[i]
                    else "centre" if by_centre[i] else "neighbours",
                    "votes": {int(c): int(v) for c, v in enumerate(votes[i]) if v}})
    return sorted(out, key=lambda m: -m["margin"])


def find_suspects(root, *, task: str | None = None, cache: CropCache | None = None,
                  threshold: float = NEAR_DUPLICATE_DISTANCE, neighbours: int = NEIGHBOURS,
                  rule: str | None = None, prepare_missing: bool = True,
                  callback: StageCallback | None = None) -> Suspects:
    """Exact duplicates, near duplicates and possible mislabels of a dataset.

    Args:
        root: dataset folder or :class:`DatasetSpec`.
        task: as in :func:`discover_dataset`.
        cache: crop cache; its folder also holds the embedding cache.
        threshold: embedding distance under which two files are near duplicates.
        neighbours: k of the neighbour vote.
        rule: "either" or "both" (see :func:`possible_mislabels`); default "both" for gender.
        prepare_missing: False raises DatasetError instead of detecting unprepared photos.
        callback: ``callback(stage, done, total)``, stage "prepare" or "embed".
    """
    spec = _spec(root, task)
    cache = cache if cache is not None else CropCache()
    rule = rule or ("both" if spec.task == "gender" else "either")
    rows = dataset_rows(spec)
    paths = [p for p, _, _ in rows]
    shas = cache.hash_files(paths)
    readable = [i for i, s in enumerate(shas) if isinstance(s, str)]
    files, names, splits = ([str(rows[i][0]) for i in readable], [rows[i][1] for i in readable],
                            [rows[i][2] for i in readable])
    shas = [shas[i] for i in readable]
    exact = exact_duplicates(files, shas, names, splits)
    records = cache.lookup_shas(shas)
    missing = [Path(f) for f, s in zip(files, shas) if s not in records]
    if missing:
        if not prepare_missing:
            raise DatasetError(f"{len(missing)} photo(s) of {spec.root} are not prepared yet; "
                               f"run the prepare step first")
        from core.data.coverage import dataset_coverage

        dataset_coverage(spec, cache=cache, callback=callback)
        records = cache.lookup_shas(shas)
    usable = [i for i, s in enumerate(shas)
              if s in records and records[s].error is None and not records[s].fallback]
    emb = embed_records([shas[i] for i in usable], cache, callback=callback)
    class_index = {c: i for i, c in enumerate(spec.classes)}
    labels = np.array([class_index[names[i]] for i in usable], dtype=np.int64)
    groups = np.unique(np.array([shas[i] for i in usable]), return_inverse=True)[1] \
        if usable else np.zeros(0, np.int64)
    index, _, pairs = neighbours_and_pairs(emb, groups, neighbours, threshold)
    notes = []
    if len(pairs) > MAX_PAIRS:
        notes.append(f"{len(pairs)} near-duplicate pairs; the closest {MAX_PAIRS} are listed")
    near = []
    for a, b, d in pairs[:MAX_PAIRS]:
        ia, ib = usable[a], usable[b]
        near.append({"a": files[ia], "b": files[ib], "distance": round(float(d), 4),
                     "class_a": names[ia], "class_b": names[ib], "split_a": splits[ia],
                     "split_b": splits[ib],
                     "flags": _flags(names[ia], names[ib], splits[ia], splits[ib])})
    mislabels = []
    for m in possible_mislabels(emb, labels, len(spec.classes), index, rule=rule):
        i, closer = m["row"], m["closer_to"]
        of_class = np.nonzero(labels == closer)[0]
        example = of_class[np.argmax(emb[of_class] @ emb[i])]
        mislabels.append({"file": files[usable[i]], "label": names[usable[i]],
                          "split": splits[usable[i]], "closer_to": spec.classes[closer],
                          "margin": round(m["margin"], 4),
                          "own_distance": round(m["own_distance"], 4),
                          "other_distance": round(m["other_distance"], 4),
                          "neighbours": {spec.classes[c]: v for c, v in
                                         sorted(m["votes"].items(), key=lambda cv: -cv[1])},
                          "example": files[usable[int(example)]], "reason": m["reason"]})
    not_embedded = len(rows) - len(usable)
    if not_embedded:
        notes.append(f"{not_embedded} photo(s) without a face (or unreadable) are not compared "
                     f"by embedding; exact duplicates cover them")
    return Suspects(exact_duplicates=exact, near_duplicates=near, mislabels=mislabels,
                    n_photos=len(rows), n_embedded=len(usable), not_embedded=not_embedded,
                    threshold=float(threshold), neighbours=int(index.shape[1]), rule=rule,
                    notes=notes)
