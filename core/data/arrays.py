"""One split's crops as one memory-mapped ``uint8 (N, 3, S, S)`` array file in the cache folder.

Why: a split of 200,000 photos at 160 px is 15 GB; it must never be built in RAM. The crops live
in the SQLite crop cache (one blob per photo); training wants them as rows it can ``index_select``
in batches. So the rows of a split are written once, in chunks (bounded memory: ``CHUNK`` crops
at a time), already resized to the training size, to a ``.npy`` file under
``<cache>/arrays/``; every later run (and every other rank on the machine) maps that file and
reads only the pages its batches touch. The OS page cache keeps hot rows in memory when they fit
and drops them when they do not.

The file name is a hash of everything that decides its contents: the crop settings key, the
output size, the resize method and the ordered list of content hashes (a split's fingerprint).
It is written to a temporary name and renamed when complete, so a killed build leaves no
half-written array under the final name (the next run rebuilds it from the crop cache, which is
cheap next to detection).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

ARRAYS_DIR = "arrays"
# Crops read, resized and written per step: 256 x 3 x 160 x 160 is 20 MB of uint8 (80 MB while
# resized as float): the build's memory does not depend on the split's size.
CHUNK = 256
# Part of the key: a change in how rows are resized must not reuse old files.
RESIZE_TAG = "bilinear-antialias-uint8-v1"


def array_key(crop_key: str, size: int, shas: Sequence[str]) -> str:
    """Hash naming the array of these crops (in this order) at this size."""
    digest = hashlib.sha1(f"{crop_key}|{size}|{RESIZE_TAG}|{len(shas)}\n".encode())
    for sha in shas:
        digest.update(sha.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:20]


def array_path(cache, size: int, shas: Sequence[str]) -> Path:
    return Path(cache.root) / ARRAYS_DIR / f"{array_key(cache.settings.key(), size, shas)}.npy"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(path: Path) -> None:
    """Temporary files of killed builds of this array (their pid is gone) are removed."""
    for tmp in path.parent.glob(path.name + ".tmp-*"):
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if not _pid_alive(pid):
            tmp.unlink(missing_ok=True)


def open_array(path: Path) -> torch.Tensor:
    """A torch view of the array file: copy-on-write mapping (``mmap_mode="c"``), so the tensor
    is writable for torch but nothing is ever written back to the file, and only the pages that
    are read use memory."""
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def build_array(cache, shas: Sequence[str], size: int, *, chunk: int | None = None,
                callback: Callable[[int, int], None] | None = None) -> Path:
    """Write the crops of ``shas`` (in order), resized to ``size``, to their array file.

    Returns the path; an existing complete file is reused as it is. Rows are written with plain
    file writes, not through a writable mapping, so the process's resident memory stays at one
    chunk instead of growing with dirty mapped pages.
    """
    from core.augment import resize_uint8

    chunk = int(chunk or CHUNK)
    path = array_path(cache, size, shas)
    shape = (len(shas), 3, size, size)
    if path.exists():
        try:
            if tuple(np.load(path, mmap_mode="r").shape) == shape:
                return path
        except (OSError, ValueError):
            pass  # damaged (should not happen: written under a temporary name): rebuild
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    header = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    offset = header.offset  # where the rows start, after the .npy header
    del header
    row = 3 * size * size
    crop = cache.settings.size
    try:
        with open(tmp, "r+b") as f:
            for start in range(0, len(shas), chunk):
                part = cache.crops(shas[start:start + chunk], channels_first=True)
                rows = resize_uint8(torch.from_numpy(part), size) if crop != size else torch.from_numpy(part)
                f.seek(offset + start * row)
                f.write(rows.numpy().tobytes())
                if callback is not None:
                    callback(min(start + chunk, len(shas)), len(shas))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# Every dataset, split and image size trained on leaves an array; without a limit the folder
# only grows. Least recently used arrays beyond the budget go (the crop cache can rebuild them
# cheaply). Deleting a file another process has mapped is safe on POSIX: its mapping keeps the
# data until it is closed; arrays used in the last RECENTLY_USED_SECONDS are kept regardless, so
# a rank about to open a file its rank 0 just built never finds it gone.
BUDGET_ENV = "FACELAB_ARRAYS_MAX_GB"
DEFAULT_BUDGET_GB = 20.0
RECENTLY_USED_SECONDS = 3600


def arrays_budget_bytes() -> int:
    raw = os.environ.get(BUDGET_ENV, "").strip()
    try:
        gigabytes = float(raw) if raw else DEFAULT_BUDGET_GB
        if gigabytes < 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"{BUDGET_ENV}={raw!r} is not a size: give gigabytes as a number >= 0 "
                         f"(default {DEFAULT_BUDGET_GB:g})") from None
    return int(gigabytes * 1024 ** 3)


def prune_arrays(folder: str | Path, *, keep: Path | None = None, budget_bytes: int | None = None,
                 now: float | None = None) -> list[Path]:
    """Remove the least recently used ``.npy`` arrays of ``folder`` until the rest fits in
    ``budget_bytes`` (default: :func:`arrays_budget_bytes`); ``keep`` and arrays used within the
    last hour are never removed. Returns the files removed."""
    import time

    budget = arrays_budget_bytes() if budget_bytes is None else budget_bytes
    now = time.time() if now is None else now
    files = []
    for path in Path(folder).glob("*.npy"):
        try:
            stat = path.stat()
        except OSError:
            continue  # removed meanwhile by another process
        files.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in files)
    removed = []
    for used, size, path in sorted(files, key=lambda f: f[0]):  # least recently used first
        if total <= budget:
            break
        if path == keep or now - used < RECENTLY_USED_SECONDS:
            continue
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        removed.append(path)
    return removed


def crop_array(cache, shas: Sequence[str], size: int | None = None, *,
               callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``uint8 (N, 3, size, size)`` tensor of the crops of ``shas``, memory-mapped from the cache
    folder (built on the first call). ``size`` defaults to the cache's crop size. Older arrays
    beyond the folder's budget (``FACELAB_ARRAYS_MAX_GB``, default 20) are pruned."""
    size = int(size or cache.settings.size)
    if not shas:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    path = build_array(cache, list(shas), size, callback=callback)
    tensor = open_array(path)
    try:
        os.utime(path)  # its modification time is its last use, for pruning
    except OSError:
        pass  # a read-only cache folder: nothing is pruned there either
    prune_arrays(path.parent, keep=path)
    return tensor
