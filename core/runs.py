"""Run folders: create, write atomically, list, load, status (incl. "interrupted"), stop requests.

A run is one folder (by default under ``weights/``, or ``$FACELAB_RUNS``)::

    run.json          config, classes, task, arch, dataset (path, fingerprint, split), status,
                      pid + process start time + boot id, device, world size, times, metrics,
                      name, note, error
    history.jsonl     one line per finished epoch (epoch, train/val loss and accuracy, lr, seconds)
    progress.jsonl    frequent small events for live UIs (step, total, epoch, loss, eta_seconds, lr)
    checkpoint.pt     best weights + metadata (see :mod:`core.checkpoint`); last.pt: latest epoch
    STOP              present when a stop was requested; the training loop checks it every batch

Every write goes through :mod:`core.storage` (atomic replace; append-only JSON lines whose torn
last line is skipped), so a run killed at any moment stays readable. This module does not import
torch, so listing runs is cheap.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from core.storage import (_json_default, _to_plain, append_jsonl, atomic_path,  # noqa: F401
                          process_alive, process_identity, read_json, read_jsonl,
                          write_bytes_atomic, write_json_atomic)

RUN_JSON = "run.json"
HISTORY = "history.jsonl"
PROGRESS = "progress.jsonl"
CHECKPOINT = "checkpoint.pt"
LAST_CHECKPOINT = "last.pt"
STOP_FILE = "STOP"
_LOCK_FILE = ".lock"

STATUSES = ("running", "finished", "failed", "stopped")
# Derived, never written: "interrupted" = written as running but its process is gone;
# "damaged" = run.json cannot be read.
DERIVED_STATUSES = ("interrupted", "damaged")

# Names become folder names (and appear in URLs and commands): keep them boring.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

REFERENCE_PREFIX = "reference:"


class RunError(ValueError):
    """A run folder that cannot be created, found, read or changed; the message is for the user."""


# -- runs -------------------------------------------------------------------------------------------

def default_runs_root() -> Path:
    """``$FACELAB_RUNS`` if set, else ``<repository>/weights``."""
    env = os.environ.get("FACELAB_RUNS")
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "weights"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _parse_time(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    try:
        return _dt.datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclasses.dataclass
class Run:
    """A snapshot of one run folder (re-read with :meth:`refresh`).

    ``info`` is the parsed run.json; ``status`` is the effective status: the recorded one, or
    "interrupted" when recorded as running but its process is gone, or "damaged".
    """

    path: Path
    info: dict
    error: str | None = None  # why run.json could not be read (status "damaged")

    @property
    def name(self) -> str:
        return self.info.get("name") or self.path.name

    @property
    def status(self) -> str:
        if self.error is not None:
            return "damaged"
        status = self.info.get("status", "running")
        if status == "running" and process_alive(self.info.get("process", {})) is False:
            return "interrupted"
        return status

    @property
    def is_active(self) -> bool:
        return self.status == "running"

    @property
    def config(self) -> dict:
        return self.info.get("config", {})

    @property
    def classes(self) -> list[str]:
        return list(self.info.get("classes") or [])

    @property
    def task(self) -> str | None:
        return self.info.get("task")

    @property
    def arch(self) -> str | None:
        return self.info.get("arch") or self.config.get("arch")

    @property
    def metrics(self) -> dict:
        return self.info.get("metrics", {})

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def last_checkpoint_path(self) -> Path:
        return self.path / LAST_CHECKPOINT

    @property
    def duration_seconds(self) -> float | None:
        start = _parse_time(self.info.get("started") or self.info.get("created"))
        if start is None:
            return None
        end = _parse_time(self.info.get("ended"))
        if end is None:
            end = _dt.datetime.now(_dt.timezone.utc) if self.status == "running" else \
                _parse_time(self.info.get("updated"))
        return None if end is None else max(0.0, (end - start).total_seconds())

    def history(self) -> list[dict]:
        return read_jsonl(self.path / HISTORY)

    def progress(self, last: int | None = None) -> list[dict]:
        return read_jsonl(self.path / PROGRESS, last=last)

    def refresh(self) -> "Run":
        return load_run(self.path)

    def to_dict(self) -> dict:
        """run.json plus the derived fields, for tables and JSON output."""
        return {**self.info, "path": str(self.path), "name": self.name, "status": self.status,
                "duration_seconds": self.duration_seconds, "error": self.info.get("error") or self.error}


def _resolve(run: str | Path | Run, root: str | Path | None = None) -> Path:
    if isinstance(run, Run):
        return run.path
    path = Path(run).expanduser()
    if path.is_dir() or path.is_absolute() or len(path.parts) > 1:
        return path
    return Path(root).expanduser() / path if root is not None else default_runs_root() / path


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Exclusive lock for read-modify-write of run.json (trainer vs. dashboard rename/note)."""
    import fcntl

    fd = os.open(run_dir / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RunError(f"invalid run name {name!r}: use 1-100 letters, digits, '.', '_' or '-', "
                       f"starting with a letter or digit")
    return name


def _unique_name(root: Path, base: str) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or "run"
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{base}-{stamp}"
    n = 2
    while (root / name).exists():
        name, n = f"{base}-{stamp}-{n}", n + 1
    return name


def create_run(root: str | Path | None, config: Any, *, name: str | None = None,
               **fields: Any) -> Run:
    """Create a new run folder with run.json (status "running", this process as owner).

    Args:
        root: parent folder of runs (None: :func:`default_runs_root`).
        config: the training config (a dataclass or dict); saved as ``config``.
        name: folder name; default ``<arch>-<YYYYmmdd-HHMMSS>``. An existing folder that
            already holds a run.json is refused (runs are never silently overwritten); an
            existing empty folder is used.
        fields: extra run.json fields (classes, task, arch, dataset, device, world_size, ...).

    Returns:
        the new :class:`Run`.
    """
    root = Path(root).expanduser() if root is not None else default_runs_root()
    plain = _to_plain(config) if config is not None else {}
    if name is None:
        name = _unique_name(root, str(plain.get("arch") or fields.get("arch") or "run"))
    validate_name(name)
    run_dir = root / name
    if (run_dir / RUN_JSON).exists():
        existing = load_run(run_dir)
        raise RunError(f"{run_dir} already holds a run (status {existing.status}); choose another "
                       f"output folder or delete that run first")
    if run_dir.exists() and any(p for p in run_dir.iterdir() if p.name != _LOCK_FILE):
        raise RunError(f"{run_dir} exists and is not empty; choose another output folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    now = _now()
    info = {"name": name, "status": "running", "config": plain,
            "arch": plain.get("arch"), "task": plain.get("task"), "classes": [],
            "dataset": {}, "device": None, "world_size": 1, "note": "",
            "created": now, "started": now, "updated": now, "ended": None,
            "metrics": {}, "error": None, "pid": os.getpid(), "process": process_identity()}
    info.update(_to_plain(fields))
    write_json_atomic(run_dir / RUN_JSON, info)
    return Run(run_dir, info)


def load_run(run: str | Path | Run, root: str | Path | None = None) -> Run:
    """The run in folder ``run`` (a path, or a name under ``root``/the default root).

    A folder whose run.json exists but cannot be parsed loads with status "damaged".
    """
    path = _resolve(run, root)
    file = path / RUN_JSON
    if not file.is_file():
        where = path if path.exists() else f"{path} (no such folder)"
        raise RunError(f"no run at {where}: run.json is missing")
    try:
        info = read_json(file)
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        return Run(path, {"name": path.name}, error=f"run.json cannot be read: {exc}")
    return Run(path, info)


def list_runs(root: str | Path | None = None) -> list[Run]:
    """Every run folder directly under ``root``, newest first (damaged ones included).

    Leftover temporary files of a killed writer are removed from runs that are not running
    (see :func:`clean_stale_temp_files`).
    """
    root = Path(root).expanduser() if root is not None else default_runs_root()
    if not root.is_dir():
        return []
    runs = [load_run(p) for p in root.iterdir() if p.is_dir() and (p / RUN_JSON).is_file()]
    for run in runs:
        if run.status != "running":
            clean_stale_temp_files(run.path)
    # str(): a hand-edited run.json with a non-string "created" must not break the listing.
    return sorted(runs, key=lambda r: (str(r.info.get("created") or ""), r.path.name), reverse=True)


# A process killed inside core.storage.atomic_path leaves its ".<name>.<random>.tmp" behind (the
# target file itself is intact: the old or the new version). Such files are never read. Those of
# files only the trainer writes (the checkpoints) go as soon as the trainer is gone; the others
# (run.json, STOP, which the dashboard writes too) once they are older than this, so a write in
# progress (a note saved from another tab) is never pulled from under its writer.
STALE_TEMP_SECONDS = 120
_TRAINER_ONLY_FILES = (CHECKPOINT, LAST_CHECKPOINT)


def clean_stale_temp_files(run_dir: str | Path, older_than: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove the atomic-write leftovers (``.*.tmp``) of a run folder: those of the checkpoints
    whatever their age, the others once older than ``older_than`` seconds. Call it only for
    runs whose trainer is gone. Returns the files removed."""
    removed = []
    limit = time.time() - older_than
    try:
        candidates = list(Path(run_dir).glob(".*.tmp"))
    except OSError:
        return removed
    for path in candidates:
        trainer_only = any(path.name.startswith(f".{name}.") for name in _TRAINER_ONLY_FILES)
        try:
            if path.is_file() and (trainer_only or path.stat().st_mtime < limit):
                path.unlink()
                removed.append(path)
        except OSError:
            pass  # gone already, or not ours to remove: harmless either way
    return removed


def update_run(run: str | Path | Run, **fields: Any) -> Run:
    """Merge ``fields`` into run.json atomically (under the run's lock). Returns the new Run."""
    path = _resolve(run)
    with _locked(path):
        current = load_run(path)
        if current.error is not None:
            raise RunError(f"cannot update {path}: {current.error}")
        info = {**current.info, **_to_plain(fields), "updated": _now()}
        write_json_atomic(path / RUN_JSON, info)
    return Run(path, info)


def update_status(run: str | Path | Run, status: str, *, error: str | None = None,
                  **fields: Any) -> Run:
    """Record ``status`` (one of :data:`STATUSES`); final statuses also set ``ended``."""
    if status not in STATUSES:
        raise RunError(f"invalid status {status!r}; valid: {', '.join(STATUSES)}")
    extra: dict[str, Any] = {"status": status}
    if status != "running":
        extra["ended"] = _now()
    if error is not None:
        extra["error"] = error
    return update_run(run, **extra, **fields)


def request_stop(run: str | Path | Run, reason: str = "requested") -> None:
    """Ask the run's training loop to stop after its current batch (writes the STOP file)."""
    path = _resolve(run)
    if not (path / RUN_JSON).is_file():
        raise RunError(f"no run at {path}")
    write_json_atomic(path / STOP_FILE, {"time": _now(), "reason": reason})


def stop_requested(run: str | Path | Run) -> bool:
    return (_resolve(run) / STOP_FILE).exists()


def set_note(run: str | Path | Run, note: str) -> Run:
    return update_run(run, note=str(note))


note = set_note


def rename_run(run: str | Path | Run, new_name: str) -> Run:
    """Rename a run's folder (and its recorded name). Refused while it is running."""
    path = _resolve(run)
    current = load_run(path)
    validate_name(new_name)
    if current.status == "running":
        raise RunError(f"run {current.name} is running; stop it before renaming")
    target = path.parent / new_name
    if target.exists():
        raise RunError(f"cannot rename {current.name} to {new_name}: {target} already exists")
    os.rename(path, target)
    if current.error is None:
        return update_run(target, name=new_name)
    return load_run(target)


rename = rename_run


def delete_run(run: str | Path | Run) -> None:
    """Delete a run folder. Refused while it is running; only folders holding run.json."""
    path = _resolve(run)
    current = load_run(path)  # raises when there is no run.json: never rmtree a stranger
    if current.status == "running":
        raise RunError(f"run {current.name} is running; stop it before deleting it")
    shutil.rmtree(path)


delete = delete_run


# -- checkpoints and models (torch-side; imported lazily so listing runs stays light) -------------

def __getattr__(name: str) -> Any:
    if name in ("save_checkpoint", "load_checkpoint", "CheckpointError", "CHECKPOINT_VERSION"):
        from core import checkpoint

        return getattr(checkpoint, name)
    if name in ("load_model", "Predictor"):
        from core import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'core.runs' has no attribute {name!r}")
