"""`python -m core.train` as the dashboard runs it: a real short run, SIGKILL mid-run, a stop
request through the STOP file, SIGTERM, and bad arguments."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core import runs
from core.checkpoint import load_checkpoint

from tests.conftest import ROOT, _env


def _train(args: list[str], cache: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core.train", *args, "--device", "cpu",
                             "--no-progress"], cwd=ROOT, env=_env(cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _wait_for_batches(proc: subprocess.Popen, run_dir: Path, timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == "batch" for e in runs.read_jsonl(run_dir / runs.PROGRESS)):
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail("no progress event within the timeout")


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_short_real_training_gives_a_loadable_run(face_data, prepared_cache, tmp_path, astronaut):
    out = tmp_path / "r18"
    proc = _train(["--data", str(face_data / "five_celeb"), "--arch", "resnet18", "--epochs", "2",
                   "--image-size", "64", "--batch-size", "32", "--out", str(out)], prepared_cache)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-3000:]
    result = _last_json(stdout)
    assert result["status"] == "finished" and result["epochs_run"] == 2
    run = runs.load_run(out)
    assert run.status == "finished" and run.task == "identity" and len(run.classes) == 5
    assert [h["epoch"] for h in run.history()] == [1, 2]
    assert run.info["dataset"]["fingerprint"] and run.info["dataset"]["split_source"] == "folders"
    assert run.info["config"]["image_size"] == 64 and run.info["device"].startswith("CPU")
    import torch

    raw = torch.load(out / runs.CHECKPOINT, weights_only=True)
    assert raw["preprocessing"]["image_size"] == 64 and raw["arch"] == "resnet18"
    predictor = runs.load_model(out)
    crops = np.stack([astronaut[:200, 150:350]] * 3)
    probs = predictor.predict_proba(crops)
    assert probs.shape == (3, 5) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert predictor.features(crops).shape == (3, 512)

    # The predictor applies the checkpoint's preprocessing: it reproduces the val accuracy.
    from core.cache import CropCache
    from core.data import discover_dataset, load_split

    spec = discover_dataset(face_data / "five_celeb")
    val = load_split(spec, "val", CropCache(prepared_cache, predictor.crop_settings),
                     prepare_missing=False)
    accuracy = float((predictor.predict_proba(val.images.permute(0, 2, 3, 1).numpy()).argmax(1)
                      == val.labels.numpy()).mean())
    best = max(run.history(), key=lambda h: (h["best"], -h["val_loss"]))
    assert accuracy == pytest.approx(run.metrics["best_val_acc"], abs=1 / len(val.labels))
    assert best["val_acc"] == pytest.approx(run.metrics["best_val_acc"], abs=1e-4)


@pytest.mark.slow
def test_sigkill_mid_run_leaves_a_consistent_run(face_data, prepared_cache, tmp_path):
    out = tmp_path / "killed"
    proc = _train(["--data", str(face_data / "five_celeb"), "--arch", "resnet18", "--epochs", "50",
                   "--image-size", "32", "--batch-size", "16", "--out", str(out)], prepared_cache)
    _wait_for_batches(proc, out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    run = runs.load_run(out)
    assert run.status == "interrupted"
    run.history()  # readable (a torn last line is skipped)
    assert run.progress()
    for path in (run.checkpoint_path, run.last_checkpoint_path):
        if path.exists():
            load_checkpoint(path, arch="resnet18", classes=run.classes)
    runs.delete_run(out)  # an interrupted run is not running: it may be deleted


@pytest.mark.slow
@pytest.mark.parametrize("how", ["stop-file", "sigterm"])
def test_stop_request_ends_with_stopped_and_a_checkpoint(face_data, prepared_cache, tmp_path, how):
    out = tmp_path / how
    proc = _train(["--data", str(face_data / "five_celeb"), "--arch", "resnet18", "--epochs", "50",
                   "--image-size", "32", "--batch-size", "16", "--out", str(out)], prepared_cache)
    _wait_for_batches(proc, out)
    if how == "stop-file":
        runs.request_stop(out)
    else:
        proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert _last_json(stdout)["status"] == "stopped"
    run = runs.load_run(out)
    assert run.status == "stopped" and run.info["ended"]
    assert run.history()  # at least the (possibly partial) first epoch
    load_checkpoint(run.checkpoint_path, arch="resnet18", classes=run.classes)
    assert runs.load_model(out).predict_proba(np.zeros((2, 48, 48, 3), np.uint8)).shape == (2, 5)


def test_bad_arguments_exit_2_and_list_choices(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "core.train", "--data", str(tmp_path), "--arch",
                           "resnet7", "--out", str(tmp_path / "r")], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 2 and "resnet18" in proc.stderr and "valid" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_existing_run_folder_is_refused(tmp_path):
    runs.create_run(tmp_path, {"arch": "resnet18"}, name="taken")
    proc = subprocess.run([sys.executable, "-m", "core.train", "--data", str(tmp_path), "--arch",
                           "resnet18", "--out", str(tmp_path / "taken")], cwd=ROOT,
                          capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == 1
    assert _last_json(proc.stdout)["status"] == "failed" and "already holds a run" in proc.stderr


def test_config_to_args_round_trips():
    from core.config import TrainConfig
    from core.train import config_from_args, config_to_args, get_args_parser

    config = TrainConfig(data="/d", arch="vgg16", out="/w/r", task="gender", epochs=3, lr=2e-4,
                         pretrained=True, augment=False, head="mlp", freeze="last:2",
                         split=(0.7, 0.2, 0.1), balance="weighted", device="cpu")
    args = config_to_args(config)
    assert config_from_args(get_args_parser().parse_args(args)) == config
    plain = TrainConfig(data="/d", out="/w/r")
    assert config_from_args(get_args_parser().parse_args(config_to_args(plain))) == plain
