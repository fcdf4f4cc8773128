"""Training loop: config validation, batched augmentation, sampling, callbacks, and short real
runs on five_celeb (in process): dlib_face head, stop request, failure handling."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from core import runs
from core.augment import augment_batch, normalize, resize_uint8
from core.callbacks import Callback, ProgressFileCallback
from core.checkpoint import load_checkpoint
from core.config import TrainConfig
from core.training import fit
from core.training_data import Dist, TrainData, epoch_indices


# -- shared: five_celeb prepared once per session (detection is the slow part) ----------------------

@pytest.fixture
def five_celeb(face_data, prepared_cache, monkeypatch) -> Path:
    monkeypatch.setenv("FACELAB_CACHE", str(prepared_cache))
    return face_data / "five_celeb"


# -- config ------------------------------------------------------------------------------------------

def test_config_validation_lists_choices():
    with pytest.raises(ValueError, match="adamw, sgd"):
        TrainConfig(data="x", optimizer="adam")
    with pytest.raises(ValueError, match="linear, mlp"):
        TrainConfig(data="x", head="conv")
    with pytest.raises(ValueError, match="none, head, last:N"):
        TrainConfig(data="x", freeze="some")
    with pytest.raises(ValueError, match="identity, gender"):
        TrainConfig(data="x", task="age")
    with pytest.raises(ValueError, match="epochs must be an integer"):
        TrainConfig(data="x", epochs=0)
    with pytest.raises(ValueError, match="valid: .*resnet18"):
        TrainConfig(data="x", arch="resnet7").resolved()
    with pytest.raises(ValueError, match="for dlib_face; valid: none, head"):
        TrainConfig(data="x", arch="dlib_face", freeze="last:2").resolved()


def test_resolved_fills_architecture_defaults():
    from core.models import ARCH_DEFAULTS

    config = TrainConfig(data="x", arch="resnet18", epochs=3).resolved()
    spec = ARCH_DEFAULTS["resnet18"]
    assert config.epochs == 3 and config.lr == spec.lr and config.batch_size == spec.batch_size
    assert config.image_size == spec.image_size and config.crop_size >= config.image_size
    assert TrainConfig.from_dict({**config.to_dict(), "unknown": 1}) == config


# -- augmentation and sampling ----------------------------------------------------------------------

def test_batched_augmentation_is_per_sample_and_seeded(astronaut):
    crop = torch.from_numpy(astronaut[:256, 128:384]).permute(2, 0, 1)[None]
    small = resize_uint8(crop.repeat(4, 1, 1, 1), 64)
    assert small.shape == (4, 3, 64, 64) and small.dtype == torch.uint8
    x = small.float() / 255
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert not torch.allclose(a[0], a[1])  # each sample draws its own transform
    z = normalize(small, (0.5,) * 3, (0.25,) * 3)
    assert torch.allclose(z, (small.float() / 255 - 0.5) / 0.25)


def _data(labels):
    y = torch.tensor(labels)
    empty = torch.zeros(0)
    return TrainData(("a", "b"), "identity", torch.zeros(len(y), 1), y, empty, empty, empty, empty,
                     False, (0, 0, 0), (1, 1, 1), {}, {})


def test_epoch_indices_shard_and_balance():
    data = _data([0] * 9 + [1] * 3)
    config = TrainConfig(data="x", seed=3)
    full = epoch_indices(data, config, 1, Dist())
    assert sorted(full.tolist()) == list(range(12))
    assert not torch.equal(full, epoch_indices(data, config, 2, Dist()))  # reshuffled per epoch
    shards = [epoch_indices(data, config, 1, Dist(rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 6
    assert sorted(torch.cat(shards).tolist()) == list(range(12))  # disjoint, covering
    capped = epoch_indices(data, TrainConfig(data="x", balance="cap"), 1, Dist())
    assert np.bincount(data.train_y[capped].numpy()).tolist() == [3, 3]  # cap = (lower) median
    weighted = epoch_indices(data, TrainConfig(data="x", balance="weighted"), 1, Dist())
    assert len(weighted) == 12 and int(weighted.max()) < 12


def test_progress_file_callback_writes_history_and_events(tmp_path):
    cb = ProgressFileCallback(tmp_path, every_seconds=0)
    cb.on_train_start({"epochs": 2, "n_train": 4, "n_val": 2, "classes": ["a", "b"], "device": "CPU"})
    for step in (1, 2):
        cb.on_batch_end(step, 2, {"epoch": 1, "loss": 0.5, "lr": 0.1})
    cb.on_epoch_end(1, {"epoch": 1, "train_loss": 0.5, "train_acc": 1.0, "val_loss": 0.4,
                        "val_acc": 1.0, "lr": 0.1, "seconds": 1.0, "best": True})
    cb.on_train_end({"status": "finished", "history": []})
    events = runs.read_jsonl(tmp_path / runs.PROGRESS)
    assert [e["event"] for e in events] == ["start", "batch", "batch", "epoch", "end"]
    assert events[2]["step"] == 2 and events[2]["eta_seconds"] is not None
    assert runs.read_jsonl(tmp_path / runs.HISTORY)[0]["val_acc"] == 1.0


# -- real short runs (in process) ---------------------------------------------------------------------

class _Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_start(self, info):
        self.events.append("start")

    def on_epoch_end(self, epoch, metrics):
        self.events.append(("epoch", epoch))

    def on_train_end(self, result):
        self.events.append("end")


@pytest.mark.slow
def test_dlib_face_head_on_five_celeb(five_celeb, tmp_path):
    recorder = _Recorder()
    result = fit(TrainConfig(data=str(five_celeb), arch="dlib_face", out=str(tmp_path / "dlib"),
                             epochs=30, lr=0.1, device="cpu"), callbacks=[recorder])
    assert result["status"] == "finished" and result["task"] == "identity"
    assert result["best"]["val_acc"] >= 0.9, result["best"]
    assert recorder.events[0] == "start" and recorder.events[-1] == "end"
    run = runs.load_run(tmp_path / "dlib")
    assert run.status == "finished" and run.metrics["best_val_acc"] >= 0.9
    assert len(run.history()) == result["epochs_run"]

    predictor = runs.load_model(run.path)
    assert predictor.is_embedding and predictor.classes == tuple(result["classes"])
    from core.cache import CropCache
    from core.data import discover_dataset, load_split

    spec = discover_dataset(five_celeb)
    val = load_split(spec, "val", CropCache(settings=predictor.crop_settings), prepare_missing=False)
    crops = val.images.permute(0, 2, 3, 1).numpy()
    probs = predictor.predict_proba(crops)
    assert probs.shape == (len(crops), 5) and np.allclose(probs.sum(1), 1, atol=1e-5)
    accuracy = float((probs.argmax(1) == val.labels.numpy()).mean())
    assert accuracy == pytest.approx(result["best"]["val_acc"], abs=1 / len(crops))
    assert predictor.embed(crops[:2]).shape == (2, 128)


@pytest.mark.slow
def test_stop_event_ends_cleanly_with_a_loadable_checkpoint(five_celeb, tmp_path):
    stop = threading.Event()

    class StopAfterFirstBatch(Callback):
        def on_batch_end(self, step, total, metrics):
            stop.set()

    result = fit(TrainConfig(data=str(five_celeb), arch="resnet18", out=str(tmp_path / "r"),
                             epochs=5, image_size=32, batch_size=16, device="cpu"),
                 callbacks=[StopAfterFirstBatch()], stop=stop)
    assert result["status"] == "stopped" and result["epochs_run"] == 1
    run = runs.load_run(tmp_path / "r")
    assert run.status == "stopped" and run.info["stop_reason"]
    checkpoint = load_checkpoint(run.checkpoint_path, arch="resnet18", classes=run.classes)
    assert checkpoint["metrics"]["partial"] is True
    assert runs.load_model(run.path).predict_proba(np.zeros((1, 64, 64, 3), np.uint8)).shape == (1, 5)


@pytest.mark.slow
def test_error_marks_failed_and_keeps_last_good_checkpoint(five_celeb, tmp_path):
    class FailInEpochTwo(Callback):
        def on_batch_end(self, step, total, metrics):
            if metrics["epoch"] == 2:
                raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        fit(TrainConfig(data=str(five_celeb), arch="dlib_face", out=str(tmp_path / "f"),
                        epochs=3, device="cpu"), callbacks=[FailInEpochTwo()])
    run = runs.load_run(tmp_path / "f")
    assert run.status == "failed" and "disk on fire" in run.info["error"]
    assert load_checkpoint(run.checkpoint_path)["epoch"] == 1
    assert [h["epoch"] for h in run.history()] == [1]


def test_single_class_dataset_fails_with_clear_message(face_data, tmp_path):
    data = tmp_path / "one"
    shutil.copytree(face_data / "five_celeb" / "train" / "madonna", data / "madonna")
    with pytest.raises(ValueError, match="only one class"):
        fit(TrainConfig(data=str(data), arch="resnet18", out=str(tmp_path / "run"), device="cpu"))
    run = runs.load_run(tmp_path / "run")
    assert run.status == "failed" and "only one class" in run.info["error"]
