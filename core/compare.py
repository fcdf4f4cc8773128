"""Runs side by side: one table row per run, and the comparison of two or more runs.

    from core.compare import runs_frame, compare
    table = runs_frame()                      # every run under $FACELAB_RUNS (or weights/)
    result = compare(["r18-a", "r18-b"])      # curves, per-class accuracy, settings diff

Everything here is plain data (records and pandas DataFrames) read from the runs store
(:mod:`core.runs`); the Runs page only renders it. Nothing imports torch, so the table of a
hundred runs costs a hundred small JSON reads. A damaged run.json gives a row with status
"damaged" and its error, never an exception.
"""
from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from core.runs import RUN_JSON, Run, RunError, list_runs, load_run

# The settings worth a column in the runs table (the rest are in the settings diff).
KEY_SETTINGS = ("epochs", "image_size", "lr", "batch_size", "pretrained", "augment", "balance",
                "freeze")

# Columns of the runs table, in display order (see :func:`run_record`).
COLUMNS = ("name", "status", "dataset", "task", "arch", *KEY_SETTINGS, "val_acc", "val_loss",
           "test_acc", "best_epoch", "epochs_run", "duration_min", "device", "world_size",
           "created", "note", "data_path", "path", "error")

# What each status means, for a legend on the page and tooltips.
STATUS_HELP = {
    "running": "training now: its process is alive",
    "finished": "ran all its epochs (or stopped early on a val-loss plateau)",
    "stopped": "stopped on request; its best checkpoint is kept",
    "failed": "ended with an error (see the error column); its last good checkpoint is kept",
    "interrupted": "recorded as running, but its training process is gone (the server or the "
                   "machine was stopped or killed mid-run); its last good checkpoint is still "
                   "loadable",
    "damaged": "run.json cannot be read; the folder can still be renamed or deleted",
}
STATUS_COLOURS = {"running": "blue", "finished": "green", "stopped": "orange", "failed": "red",
                  "interrupted": "violet", "damaged": "gray"}

# Settings that always differ between runs and say nothing about the training itself.
_NOT_SETTINGS = ("out",)


def _number(value) -> float | None:
    """A finite float, or None (JSON null, NaN, strings and missing values)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _created(run: Run) -> _dt.datetime | None:
    text = run.info.get("created")
    try:
        stamp = _dt.datetime.fromisoformat(text) if text else None
    except (TypeError, ValueError):
        return None
    if stamp is not None and stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=_dt.timezone.utc)
    return stamp


def dataset_path(run: Run) -> str | None:
    """The dataset folder the run trained on (recorded root, else the configured one)."""
    dataset = run.info.get("dataset")
    root = dataset.get("root") if isinstance(dataset, dict) else None
    return str(root or run.config.get("data") or "") or None


def evaluation_folder(run: Run) -> str | None:
    """The folder to evaluate ``run`` on: its dataset's val/ (or test/) split folder when the
    dataset has split folders, else the dataset folder itself (which then includes the photos it
    trained on, so its accuracy is optimistic)."""
    root = dataset_path(run)
    if not root:
        return None
    for split in ("val", "test"):
        if (Path(root) / split).is_dir():
            return str(Path(root) / split)
    return root


def run_record(run: Run) -> dict:
    """One run as a flat dict (the columns of :data:`COLUMNS`); never raises on bad run.json:
    a run.json that parses but holds the wrong types gives a "damaged" row with the reason."""
    try:
        return _record(run)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        return {**{c: None for c in COLUMNS}, "name": run.path.name, "status": "damaged",
                "note": "", "path": str(run.path),
                "error": f"run.json has unexpected content ({type(exc).__name__}: {exc})"}


def _record(run: Run) -> dict:
    config = run.config if isinstance(run.config, dict) else {}
    metrics = run.metrics if isinstance(run.metrics, dict) else {}
    duration = run.duration_seconds if run.error is None else None
    data = dataset_path(run) if run.error is None else None
    return {
        "name": _name(run),
        "status": run.status,
        "dataset": Path(data).name if data else None,
        "task": run.task,
        "arch": run.arch,
        **{key: config.get(key) for key in KEY_SETTINGS},
        "val_acc": _number(metrics.get("best_val_acc")),
        "val_loss": _number(metrics.get("best_val_loss")),
        "test_acc": _number(metrics.get("test_acc")),
        "best_epoch": metrics.get("best_epoch"),
        "epochs_run": metrics.get("epochs_run"),
        "duration_min": None if duration is None else round(duration / 60, 2),
        "device": run.info.get("device"),
        "world_size": run.info.get("world_size"),
        "created": _created(run),
        "note": run.info.get("note") or "",
        "data_path": data,
        "path": str(run.path),
        "error": run.info.get("error") or run.error,
    }


def runs_records(root: str | Path | None = None, runs: Iterable[Run] | None = None) -> list[dict]:
    """Every run under ``root`` (or the given runs) as :func:`run_record` dicts, newest first."""
    return [run_record(run) for run in (list_runs(root) if runs is None else runs)]


def runs_signature(root: str | Path | None = None, runs: Iterable[Run] | None = None) -> tuple:
    """What changes in the runs store when a run starts, records an epoch (run.json rewritten),
    ends or dies: cheap to compare, so a page can redraw only when there is something new."""
    def written(run: Run) -> int | None:
        try:
            return (run.path / RUN_JSON).stat().st_mtime_ns  # "updated" has 1 s resolution
        except OSError:
            return None
    runs = list_runs(root) if runs is None else runs
    return tuple(sorted((run.path.name, run.status, written(run)) for run in runs))


def runs_frame(root: str | Path | None = None, runs: Iterable[Run] | None = None) -> pd.DataFrame:
    """The runs table as a DataFrame with the columns of :data:`COLUMNS` (one row per run)."""
    frame = pd.DataFrame(runs_records(root, runs), columns=list(COLUMNS))
    for column in ("val_acc", "val_loss", "test_acc", "duration_min"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in ("epochs", "image_size", "batch_size", "best_epoch", "epochs_run", "world_size"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    frame["lr"] = pd.to_numeric(frame["lr"], errors="coerce")
    frame["created"] = pd.to_datetime(frame["created"], utc=True, errors="coerce")
    return frame


def filter_runs(frame: pd.DataFrame, *, status: Iterable[str] = (), task: Iterable[str] = (),
                arch: Iterable[str] = (), dataset: Iterable[str] = (), search: str = "") -> pd.DataFrame:
    """Rows matching every given filter (an empty filter keeps all); ``search`` is a
    case-insensitive substring of the name or the note."""
    keep = pd.Series(True, index=frame.index)
    for column, wanted in (("status", status), ("task", task), ("arch", arch),
                           ("dataset", dataset)):
        wanted = list(wanted)
        if wanted:
            keep &= frame[column].isin(wanted)
    text = (search or "").strip().lower()
    if text:
        keep &= (frame["name"].fillna("").str.lower().str.contains(text, regex=False) |
                 frame["note"].fillna("").str.lower().str.contains(text, regex=False))
    return frame[keep].reset_index(drop=True)


# -- comparison -------------------------------------------------------------------------------------

def _load(runs: Iterable[str | Path | Run], root: str | Path | None) -> list[Run]:
    loaded = [run if isinstance(run, Run) else load_run(run, root) for run in runs]
    names = [_name(run) for run in loaded]
    if len(set(names)) < len(names):
        raise RunError(f"the same run was given twice: {', '.join(names)}")
    return loaded


def history_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """Per-epoch curves of every run in long form: run, epoch, split (train/val), metric
    (loss/accuracy), value. Ready for one line per (run, split) in a facet per metric."""
    rows = []
    for run in runs:
        for line in run.history() if run.error is None else []:
            epoch = line.get("epoch")
            for split in ("train", "val"):
                for metric, key in (("loss", f"{split}_loss"), ("accuracy", f"{split}_acc")):
                    value = _number(line.get(key))
                    if epoch is not None and value is not None:
                        rows.append({"run": _name(run), "epoch": epoch, "split": split,
                                     "metric": metric, "value": value})
    return pd.DataFrame(rows, columns=["run", "epoch", "split", "metric", "value"])


def per_class(run: Run) -> dict | None:
    """``{class: {"acc": float | None, "n": int}}`` of the run's best checkpoint on its val
    split, as recorded at training time; None when not recorded (runs from before it was)."""
    record = run.info.get("val_per_class") if run.error is None else None
    classes = record.get("classes") if isinstance(record, dict) else None
    if not isinstance(classes, dict) or not classes:
        return None
    return {str(name): {"acc": _number(v.get("acc")), "n": int(v.get("n") or 0)}
            for name, v in classes.items() if isinstance(v, dict)}


def per_class_frame(runs: Iterable[Run]) -> tuple[pd.DataFrame, list[str]]:
    """Per-class val accuracy side by side.

    Returns:
        (frame, not_recorded): frame has one row per class (the union over the runs, in the
        first run's order), columns ``class``, ``<run>`` (accuracy 0-1, NaN when the run has no
        such class), ``n <run>`` (val photos) and ``difference``: last minus first run for two
        runs, max minus min (the spread) for more. not_recorded lists the runs without the data.
    """
    runs = list(runs)
    tables, missing = {}, []
    for run in runs:
        table = per_class(run)
        if table is None:
            missing.append(_name(run))
        else:
            tables[_name(run)] = table
    classes: list[str] = []
    for table in tables.values():
        classes += [c for c in table if c not in classes]
    frame = pd.DataFrame({"class": classes})
    for name, table in tables.items():
        frame[name] = [table.get(c, {}).get("acc") for c in classes]
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    for name, table in tables.items():
        frame[f"n {name}"] = pd.array([table[c]["n"] if c in table else None for c in classes],
                                      dtype="Int64")
    names = list(tables)
    if len(names) == 2:
        frame["difference"] = frame[names[1]] - frame[names[0]]
    elif len(names) > 2:
        frame["difference"] = frame[names].max(axis=1) - frame[names].min(axis=1)
    return frame, missing


# Recorded facts compared after the config's own keys.
_RECORDED = ("task (resolved)", "classes", "dataset fingerprint", "device (used)", "world_size")


def _flat_settings(run: Run) -> dict:
    config = run.config if isinstance(run.config, dict) else {}
    flat = {str(k): v for k, v in config.items() if k not in _NOT_SETTINGS}
    dataset = run.info.get("dataset") if isinstance(run.info.get("dataset"), dict) else {}
    classes = run.info.get("classes")
    recorded = (run.info.get("task"), len(classes) if isinstance(classes, list) else None,
                dataset.get("fingerprint"), run.info.get("device"), run.info.get("world_size"))
    flat.update(zip(_RECORDED, recorded))
    return flat


def _name(run: Run) -> str:
    return run.name if isinstance(run.name, str) and run.name else run.path.name


def _show(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_show, value))
    return str(value)


def settings_diff(runs: Iterable[Run], *, all_keys: bool = False) -> pd.DataFrame:
    """Settings that differ between the runs: one row per setting, one column per run (values as
    text, "-" when a run lacks the key). ``all_keys`` keeps the equal ones too."""
    runs = list(runs)
    flats = {_name(run): _flat_settings(run) for run in runs}
    keys: list[str] = []
    for flat in flats.values():
        keys += [k for k in flat if k not in keys and k not in _RECORDED]
    keys += _RECORDED
    rows = []
    for key in keys:
        values = {name: _show(flat.get(key)) for name, flat in flats.items()}
        if all_keys or len(set(values.values())) > 1:
            rows.append({"setting": key, **values})
    return pd.DataFrame(rows, columns=["setting", *flats])


def compare(runs: Iterable[str | Path | Run], root: str | Path | None = None) -> dict:
    """Everything the Runs page shows for a selection of runs.

    Args:
        runs: run names (under ``root``), folders or :class:`Run` objects; one run works too
            (its curves and per-class table, and all of its settings).
        root: runs root for names (None: ``$FACELAB_RUNS`` or weights/).

    Returns:
        dict: ``runs`` (records, :func:`run_record`), ``history`` (:func:`history_frame`),
        ``per_class`` and ``per_class_missing`` (:func:`per_class_frame`), ``settings``
        (:func:`settings_diff`; every setting when only one run is given).

    Raises:
        RunError: a run that does not exist, or the same run twice.
    """
    loaded = _load(runs, root)
    per_class_table, missing = per_class_frame(loaded)
    return {"runs": [run_record(run) for run in loaded],
            "history": history_frame(loaded),
            "per_class": per_class_table, "per_class_missing": missing,
            "settings": settings_diff(loaded, all_keys=len(loaded) == 1)}
