"""Runs store: atomic files, torn JSON lines, status incl. interrupted, checkpoints."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from core import runs
from core.checkpoint import CheckpointError, check_state_dict, load_checkpoint, save_checkpoint


def _config(**extra):
    return {"arch": "resnet18", "data": "/data/x", "epochs": 2, **extra}


def test_create_load_list_round_trip(tmp_path):
    run = runs.create_run(tmp_path, _config(), name="first", classes=["a", "b"], task="identity")
    assert (tmp_path / "first" / "run.json").is_file()
    loaded = runs.load_run(tmp_path / "first")
    assert loaded.name == "first" and loaded.status == "running"  # this process is alive
    assert loaded.classes == ["a", "b"] and loaded.task == "identity" and loaded.arch == "resnet18"
    assert loaded.info["pid"] == os.getpid() and loaded.info["process"]["pid_start"] is not None
    assert runs.load_run("first", root=tmp_path).path == run.path

    runs.update_status(run, "finished", metrics={"best_val_acc": 0.9})
    done = runs.load_run(run.path)
    assert done.status == "finished" and done.metrics["best_val_acc"] == 0.9
    assert done.info["ended"] is not None and done.duration_seconds is not None

    second = runs.create_run(tmp_path, _config(arch="vgg16"))
    assert second.name.startswith("vgg16-")
    assert {r.name for r in runs.list_runs(tmp_path)} == {"first", second.name}
    assert runs.list_runs(tmp_path / "missing") == []
    json.dumps([r.to_dict() for r in runs.list_runs(tmp_path)])  # table-ready


def test_create_refuses_existing_run_and_bad_names(tmp_path):
    runs.create_run(tmp_path, _config(), name="taken")
    with pytest.raises(runs.RunError, match="already holds a run"):
        runs.create_run(tmp_path, _config(), name="taken")
    with pytest.raises(runs.RunError, match="invalid run name"):
        runs.create_run(tmp_path, _config(), name="../escape")
    with pytest.raises(runs.RunError, match="invalid status"):
        runs.update_status(tmp_path / "taken", "done")
    with pytest.raises(runs.RunError, match="run.json is missing"):
        runs.load_run(tmp_path / "nothing")


def test_torn_last_jsonl_line_is_skipped_and_next_append_is_whole(tmp_path):
    path = tmp_path / "history.jsonl"
    runs.append_jsonl(path, {"epoch": 1})
    runs.append_jsonl(path, {"epoch": 2})
    with open(path, "ab") as handle:  # a writer killed mid-line
        handle.write(b'{"epoch": 3, "val_lo')
    assert [r["epoch"] for r in runs.read_jsonl(path)] == [1, 2]
    runs.append_jsonl(path, {"epoch": 4})
    assert [r["epoch"] for r in runs.read_jsonl(path)] == [1, 2, 4]
    assert runs.read_jsonl(path, last=1) == [{"epoch": 4}]
    assert runs.read_jsonl(tmp_path / "absent.jsonl") == []


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "run.json"
    runs.write_json_atomic(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with runs.atomic_path(path) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp files left


def _dead_process_identity():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    identity = runs.process_identity(proc.pid)
    proc.kill()
    proc.wait()
    return identity


def test_running_with_dead_pid_is_interrupted(tmp_path):
    run = runs.create_run(tmp_path, _config(), name="dead")
    runs.update_run(run, process=_dead_process_identity())
    assert runs.load_run(run.path).status == "interrupted"
    runs.delete_run(run.path)  # an interrupted run may be deleted
    assert not run.path.exists()


def test_listing_cleans_what_a_killed_writer_left(tmp_path):
    """A trainer killed mid-save leaves ".checkpoint.pt.<random>.tmp": gone at the next listing
    once the run is known to be dead, however fresh. A fresh run.json temp file may be a note
    being saved from another tab, so it stays until it is old; a running run keeps everything."""
    dead = runs.create_run(tmp_path, _config(), name="dead")
    runs.update_run(dead, process=_dead_process_identity())
    live = runs.create_run(tmp_path, _config(), name="live")
    runs.update_run(live, process=runs.process_identity())
    torn = {name: dead.path / f".{name}.abc123.tmp" for name in ("checkpoint.pt", "last.pt", "run.json")}
    for path in torn.values():
        path.write_bytes(b"half a file")
    live_torn = live.path / ".checkpoint.pt.xyz789.tmp"
    live_torn.write_bytes(b"being written")

    assert {r.name: r.status for r in runs.list_runs(tmp_path)} == {"dead": "interrupted",
                                                                   "live": "running"}
    assert not torn["checkpoint.pt"].exists() and not torn["last.pt"].exists()
    assert torn["run.json"].exists() and live_torn.exists()

    old = time.time() - runs.STALE_TEMP_SECONDS - 10
    os.utime(torn["run.json"], (old, old))
    os.utime(live_torn, (old, old))
    runs.list_runs(tmp_path)
    assert not torn["run.json"].exists()
    assert live_torn.exists()  # its writer is alive: never touched


def test_reused_pid_zombie_and_reboot_are_interrupted(tmp_path):
    me = runs.process_identity()
    assert runs.process_alive(me) is True
    assert runs.process_alive({**me, "pid_start": me["pid_start"] + 1}) is False  # pid reused
    assert runs.process_alive({**me, "boot_id": "another-boot"}) is False
    assert runs.process_alive({**me, "host": "another-host"}) is None  # cannot tell
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    identity = runs.process_identity(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    time.sleep(0.3)  # not reaped yet: a zombie still answers kill(pid, 0)
    assert runs.process_alive(identity) is False
    proc.wait()


def test_note_rename_delete_and_running_guard(tmp_path):
    run = runs.create_run(tmp_path, _config(), name="live")
    with pytest.raises(runs.RunError, match="running"):
        runs.delete_run(run.path)
    with pytest.raises(runs.RunError, match="running"):
        runs.rename_run(run.path, "other")
    runs.set_note(run.path, "baseline")
    runs.update_status(run.path, "stopped")
    renamed = runs.rename_run(run.path, "renamed")
    assert renamed.path == tmp_path / "renamed" and renamed.name == "renamed"
    assert renamed.info["note"] == "baseline" and not run.path.exists()
    runs.delete_run(renamed.path)
    assert runs.list_runs(tmp_path) == []
    (tmp_path / "stranger").mkdir()
    with pytest.raises(runs.RunError):
        runs.delete_run(tmp_path / "stranger")  # never rmtree a folder that is not a run
    assert (tmp_path / "stranger").exists()


def test_stop_request_and_damaged_run_json(tmp_path):
    run = runs.create_run(tmp_path, _config(), name="stopme")
    assert not runs.stop_requested(run.path)
    runs.request_stop(run.path)
    assert runs.stop_requested(run.path)
    (run.path / "run.json").write_text('{"status": "runn')
    damaged = runs.load_run(run.path)
    assert damaged.status == "damaged" and "cannot be read" in damaged.error
    assert [r.status for r in runs.list_runs(tmp_path)] == ["damaged"]


def _tiny_state():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3).state_dict()


def _save(path, **overrides):
    fields = dict(model_state=_tiny_state(), arch="tiny", classes=["a", "b", "c"], task="identity",
                  preprocessing={"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3,
                                 "crop": {"size": 160, "margin": 0.1}},
                  config={"epochs": 1, "split": (0.8, 0.2)}, metrics={"val_acc": 0.5}, epoch=1)
    fields.update(overrides)
    return save_checkpoint(path, **fields)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    path = _save(tmp_path / "checkpoint.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["version"] == 1 and raw["arch"] == "tiny" and raw["classes"] == ["a", "b", "c"]
    assert raw["config"]["split"] == [0.8, 0.2]  # plain types only
    data = load_checkpoint(path, arch="tiny", classes=["a", "b", "c"])
    assert torch.equal(data["model_state"]["weight"], _tiny_state()["weight"])
    check_state_dict(torch.nn.Linear(4, 3), data["model_state"], path)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_damaged_and_mismatched_checkpoints(tmp_path):
    path = _save(tmp_path / "checkpoint.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="file not found"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, arch="resnet18", classes=["a", "b"])
    assert len(info.value.problems) == 2
    assert "architecture is 'tiny', expected 'resnet18'" in str(info.value)
    assert "classes differ" in str(info.value)
    torch.save({"model_state": _tiny_state()}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="missing keys: version, arch"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"obj": CheckpointError("x", [])}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="other than tensors"):
        load_checkpoint(tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        check_state_dict(torch.nn.Linear(4, 5), _tiny_state(), path)
    with pytest.raises(CheckpointError, match="missing"):
        check_state_dict(torch.nn.Sequential(torch.nn.Linear(4, 3)), _tiny_state(), path)
