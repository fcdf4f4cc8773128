"""core.compare and the per-class record of core.training, on real tiny runs: two resnet18 runs
trained by the real CLI (`python -m core.train`, 32 px, 1-2 epochs) on a symlinked slice of
five_celeb; damaged, interrupted and older runs are made by editing copies of their run.json."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import compare as cmp
from core.runs import RUN_JSON, list_runs, load_run
from core.storage import process_identity
from tests.conftest import FIVE, ROOT, _env, _shared_cache, five_slice

pytestmark = pytest.mark.slow

# Two runs that differ in learning rate, augmentation and epochs (what the settings diff shows).
RUN_ARGS = {"r18-a": ["--epochs", "2", "--lr", "0.001"],
            "r18-b": ["--epochs", "1", "--lr", "0.003", "--no-augment"]}


def small_data(base: Path, face_data: Path) -> Path:
    """4 train + 3 val photos per five_celeb person, as symlinks (the data is never copied)."""
    return five_slice(face_data, base / "five-runs", train=4, val=3)


def train_command(data: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "core.train", "--data", str(data), "--arch", "resnet18",
            "--out", str(out), "--image-size", "32", "--batch-size", "8", "--device", "cpu",
            "--no-progress", "--seed", "0", *args]


def train_run(data: Path, out: Path, cache: Path, *args: str, env: dict | None = None) -> Path:
    """Train one tiny run with the real CLI into ``out`` (skipped when it already finished)."""
    if (out / "checkpoint.pt").exists() and load_run(out).status == "finished":
        return out
    done = subprocess.run(train_command(data, out, *args), cwd=ROOT, env=env or _env(cache),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def compare_runs(tmp_path_factory, face_data: Path) -> tuple[Path, Path]:
    """The two runs of RUN_ARGS under one runs root, trained once per session.

    Returns (runs root, data folder)."""
    base = tmp_path_factory.getbasetemp()
    data, cache, root = small_data(base, face_data), _shared_cache(tmp_path_factory), base / "runs-compare"
    for name, args in RUN_ARGS.items():
        train_run(data, root / name, cache, *args)
    return root, data


def copy_run(run: Path, root: Path, name: str | None = None) -> Path:
    """A copy of a run folder under ``root`` (checkpoints hard-linked: cheap, and a rename or a
    delete of the copy never touches the original)."""
    target = root / (name or run.name)
    shutil.copytree(run, target, copy_function=os.link)
    if name:
        info = json.loads((target / RUN_JSON).read_text())
        (target / RUN_JSON).unlink()  # a hard link: write a new file, not through the link
        (target / RUN_JSON).write_text(json.dumps({**info, "name": name}))
    return target


def edit_run_json(run: Path, **fields) -> None:
    info = json.loads((run / RUN_JSON).read_text())
    info.update(fields)
    for key, value in fields.items():
        if value is ...:
            info.pop(key)
    (run / RUN_JSON).unlink()
    (run / RUN_JSON).write_text(json.dumps(info))


def dead_process() -> dict:
    """The identity of a process that has exited (what a SIGKILLed trainer leaves in run.json)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(child.pid)
    child.wait()
    return {**identity, "pid_start": identity["pid_start"] or 1}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory, face_data):
    return compare_runs(tmp_path_factory, face_data)[0]


def test_training_records_per_class_val_accuracy(runs_root):
    info = json.loads((runs_root / "r18-a" / RUN_JSON).read_text())
    record = info["val_per_class"]
    assert record["epoch"] == info["metrics"]["best_epoch"]
    classes = record["classes"]
    assert list(classes) == list(FIVE)
    assert [c["n"] for c in classes.values()] == [3] * 5
    assert all(0 <= c["acc"] <= 1 for c in classes.values())
    # The per-class figures add up to the overall val accuracy of the best checkpoint.
    overall = sum(c["acc"] * c["n"] for c in classes.values()) / sum(c["n"] for c in classes.values())
    assert math.isclose(overall, info["metrics"]["best_val_acc"], abs_tol=1e-9)


def test_runs_table_has_one_row_per_run(runs_root):
    frame = cmp.runs_frame(runs_root)
    assert list(frame.columns) == list(cmp.COLUMNS)
    assert sorted(frame["name"]) == ["r18-a", "r18-b"]
    rows = frame.set_index("name")
    a, b = rows.loc["r18-a"], rows.loc["r18-b"]
    assert (a["status"], a["dataset"], a["task"], a["arch"]) == ("finished", "five-runs",
                                                                  "identity", "resnet18")
    assert (a["epochs"], b["epochs"], a["image_size"], a["batch_size"]) == (2, 1, 32, 8)
    assert (a["lr"], b["lr"], a["augment"], b["augment"]) == (0.001, 0.003, True, False)
    assert (a["pretrained"], a["balance"], a["freeze"]) == (False, "none", "none")
    info = load_run(runs_root / "r18-a").metrics
    assert a["val_acc"] == info["best_val_acc"] and a["val_loss"] == info["best_val_loss"]
    assert pd_isna(a["test_acc"])  # the slice has no test split
    assert a["epochs_run"] == 2 and b["epochs_run"] == 1
    assert a["duration_min"] > 0 and "CPU" in a["device"] and a["world_size"] == 1
    assert a["created"].tzinfo is not None and a["note"] == ""
    assert a["data_path"].endswith("five-runs")


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def test_filters(runs_root):
    frame = cmp.runs_frame(runs_root)
    assert len(cmp.filter_runs(frame, status=["finished"])) == 2
    assert len(cmp.filter_runs(frame, status=["failed"])) == 0
    assert list(cmp.filter_runs(frame, search="R18-B")["name"]) == ["r18-b"]
    assert len(cmp.filter_runs(frame, arch=["resnet18"], task=["identity"],
                               dataset=["five-runs"])) == 2
    assert len(cmp.filter_runs(frame, dataset=["elsewhere"])) == 0


def test_compare_two_runs(runs_root):
    result = cmp.compare(["r18-a", "r18-b"], runs_root)
    history = result["history"]
    epochs = history.groupby("run")["epoch"].max().to_dict()
    assert epochs == {"r18-a": 2, "r18-b": 1}
    assert set(history["split"]) == {"train", "val"} and set(history["metric"]) == {"loss", "accuracy"}
    assert len(history) == (2 + 1) * 4  # epochs x (train, val) x (loss, accuracy)
    per_class = result["per_class"]
    assert list(per_class["class"]) == list(FIVE)
    assert list(per_class.columns) == ["class", "r18-a", "r18-b", "n r18-a", "n r18-b", "difference"]
    assert (per_class["difference"] == per_class["r18-b"] - per_class["r18-a"]).all()
    assert result["per_class_missing"] == []
    settings = result["settings"].set_index("setting")
    assert set(settings.index) == {"epochs", "lr", "augment"}
    assert settings.loc["lr"].tolist() == ["0.001", "0.003"]
    assert [r["name"] for r in result["runs"]] == ["r18-a", "r18-b"]


def test_one_run_shows_all_its_settings_and_three_show_the_spread(runs_root, tmp_path):
    single = cmp.compare(["r18-a"], runs_root)
    assert {"lr", "epochs", "seed", "image_size", "dataset fingerprint"} <= set(single["settings"]["setting"])
    for name in ("r18-a", "r18-b"):
        copy_run(runs_root / name, tmp_path)
    copy_run(runs_root / "r18-a", tmp_path, "r18-c")
    three = cmp.compare(["r18-a", "r18-b", "r18-c"], tmp_path)["per_class"]
    runs = three[["r18-a", "r18-b", "r18-c"]]
    assert (three["difference"] == runs.max(axis=1) - runs.min(axis=1)).all()


def test_damaged_odd_interrupted_and_old_runs_do_not_break_the_table(runs_root, tmp_path):
    copy_run(runs_root / "r18-a", tmp_path)
    old = copy_run(runs_root / "r18-b", tmp_path, "old-run")
    edit_run_json(old, val_per_class=...)  # trained before per-class accuracy was recorded
    gone = copy_run(runs_root / "r18-b", tmp_path, "gone")
    edit_run_json(gone, status="running", ended=None, process=dead_process())
    alive = copy_run(runs_root / "r18-b", tmp_path, "alive")
    edit_run_json(alive, status="running", ended=None, process=process_identity())
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / RUN_JSON).write_text('{"name": "bro')  # torn by hand
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / RUN_JSON).write_text(json.dumps(
        {"name": 5, "status": "finished", "config": [1], "created": 7, "process": 3,
         "metrics": "x"}))

    frame = cmp.runs_frame(tmp_path).set_index("name")
    assert frame.loc["broken", "status"] == "damaged"
    assert "run.json cannot be read" in frame.loc["broken", "error"]
    assert frame.loc["odd", "status"] == "damaged"
    assert "unexpected content" in frame.loc["odd", "error"]
    assert frame.loc["gone", "status"] == "interrupted"
    assert frame.loc["alive", "status"] == "running"
    assert frame.loc["r18-a", "status"] == "finished"

    result = cmp.compare(["r18-a", "old-run", "broken"], tmp_path)
    assert result["per_class_missing"] == ["old-run", "broken"]
    assert list(result["per_class"].columns) == ["class", "r18-a", "n r18-a"]
    assert "r18-a" in set(result["history"]["run"]) and "broken" not in set(result["history"]["run"])


def test_compare_refuses_unknown_and_repeated_runs(runs_root):
    from core.runs import RunError

    with pytest.raises(RunError, match="no run at"):
        cmp.compare(["r18-a", "nope"], runs_root)
    with pytest.raises(RunError, match="twice"):
        cmp.compare(["r18-a", "r18-a"], runs_root)


def test_evaluation_folder_is_the_val_split(runs_root):
    run = load_run(runs_root / "r18-a")
    assert cmp.evaluation_folder(run) == str(Path(cmp.dataset_path(run)) / "val")


def test_stale_temp_files_are_ignored_and_cleaned_only_when_safe(runs_root, tmp_path):
    """A writer killed inside core.storage.atomic_path leaves ``.<name>.<random>.tmp``; listing
    must not trip on it, and it is removed once its run is not running and it is old."""
    done = copy_run(runs_root / "r18-a", tmp_path)
    alive = copy_run(runs_root / "r18-b", tmp_path, "alive")
    edit_run_json(alive, status="running", ended=None, process=process_identity())
    half = (runs_root / "r18-a" / "checkpoint.pt").read_bytes()[:4096]
    stale, fresh, live = (done / ".checkpoint.pt.x1.tmp", done / ".run.json.x2.tmp",
                          alive / ".checkpoint.pt.x3.tmp")
    for path in (stale, fresh, live):
        path.write_bytes(half)
    hour_ago = time.time() - 3600
    for path in (stale, live):
        os.utime(path, (hour_ago, hour_ago))

    runs = {r.name: r for r in list_runs(tmp_path)}
    assert runs["r18-a"].status == "finished" and runs["alive"].status == "running"
    assert not stale.exists()  # old leftover of a finished run: removed
    assert fresh.exists()      # maybe a write in progress (another tab saving a note): kept
    assert live.exists()       # the run's trainer is alive: its files are its own
    assert len(cmp.runs_frame(tmp_path)) == 2


def test_signature_moves_with_an_epoch_an_end_and_a_death(tmp_path):
    """What the Runs page's refresh compares: unchanged on a plain re-read, changed when an epoch
    is recorded, when a run is added or ends, and when its process dies."""
    from core.runs import create_run, update_run

    run = create_run(tmp_path, {"arch": "resnet18", "data": "/x", "epochs": 3}, name="live")
    update_run(run, process=process_identity())
    first = cmp.runs_signature(tmp_path)
    assert cmp.runs_signature(tmp_path) == first == cmp.runs_signature(runs=list_runs(tmp_path))
    update_run(run, metrics={"epochs_run": 1})
    after_epoch = cmp.runs_signature(tmp_path)
    assert after_epoch != first
    update_run(run, process=dead_process())
    assert dict((n, s) for n, s, _ in cmp.runs_signature(tmp_path))["live"] == "interrupted"
    create_run(tmp_path, {"arch": "resnet18", "data": "/x", "epochs": 3}, name="second")
    assert len(cmp.runs_signature(tmp_path)) == 2
