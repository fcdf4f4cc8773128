"""The training loop: one loop for every architecture, reporting through callbacks.

    from core.training import TrainConfig, fit
    result = fit(TrainConfig(data="../shared/data/five_celeb", arch="resnet18", out="weights/r18"))

Data: crops come from the crop cache (``core.data.load_split``), resized once to the training
size into a memory-mapped uint8 array file (``core.data.arrays``; moved to the GPU when it fits);
each batch is one ``index_select`` plus batched augmentation on the device (``core.augment``), so
nothing waits on Python per image and a dataset larger than RAM trains. Embedding architectures (``dlib_face``) embed every crop once (embedding cache)
and train only their head on the vectors.

Runs: with ``config.out`` the run folder is written through ``core.runs`` (run.json, history,
progress, checkpoint.pt = best on val loss, last.pt = latest epoch). A stop request (the run's
STOP file, a ``threading.Event`` or a callable) ends the run after the current batch with status
"stopped" and the best checkpoint kept; an exception marks the run "failed" with its message and
leaves the last good checkpoint untouched.

Distributed (torchrun): only rank 0 writes; the sampler is sharded by rank; see ``_Dist``.
"""
from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core import runs
from core.callbacks import Callback, CallbackList, ProgressFileCallback, TqdmCallback
from core.config import TrainConfig
from core.device import amp_dtype, describe_device, select_device
from core.training_data import (BatchPipeline, Dist, StopBeforeTraining, TrainData,
                                 batch_chunks, epoch_indices, load_train_data, trainable_part)

__all__ = ["TrainConfig", "fit", "Callback", "TqdmCallback", "ProgressFileCallback",
           "StopSignal", "evaluate"]

CHECKPOINT_MIN_DELTA = 1e-4  # val-loss improvements smaller than this do not count


class StopSignal:
    """True once a stop was requested: an Event (``is_set()``), a callable, or the STOP file."""

    def __init__(self, stop: Any = None, run_dir: Path | None = None):
        self.stop = stop
        self.file = run_dir / runs.STOP_FILE if run_dir is not None else None
        self.reason: str | None = None

    def __call__(self) -> bool:
        if self.reason is not None:
            return True
        if self.stop is not None:
            hit = self.stop.is_set() if hasattr(self.stop, "is_set") else bool(self.stop())
            if hit:
                self.reason = "stop requested"
        if self.reason is None and self.file is not None and self.file.exists():
            self.reason = "stop requested (STOP file)"
        return self.reason is not None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _build_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=0.9, nesterov=True,
                           weight_decay=config.weight_decay)


def _build_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int):
    """(scheduler, per_step): cosine steps every batch, plateau once per epoch on val loss."""
    if config.scheduler == "cosine":
        total = max(1, config.epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), True
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.5, patience=max(1, config.patience // 2)), False
    return None, False


@torch.inference_mode()
def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, prepare: Callable,
             batch_size: int, dist: Dist | None = None) -> dict:
    """Mean loss and accuracy of ``model`` over ``inputs`` (batched; summed over ranks), plus
    per-class ``class_correct`` / ``class_n`` lists (indexed like the classes) for the Runs page."""
    model.eval()
    device = labels.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    class_correct = class_n = None
    for start in range(0, len(labels), batch_size):
        x = prepare(inputs[start:start + batch_size], train=False)
        y = labels[start:start + batch_size]
        logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        hit = logits.argmax(1) == y
        correct += hit.sum()
        k = logits.shape[1]
        if class_n is None:
            class_n = torch.zeros(k, dtype=torch.int64, device=device)
            class_correct = torch.zeros(k, dtype=torch.int64, device=device)
        class_n += torch.bincount(y, minlength=k)
        class_correct += torch.bincount(y[hit], minlength=k)
    count = torch.tensor(len(labels), dtype=torch.int64, device=device)
    if dist is not None:
        loss_sum, correct, count = dist.all_sum(loss_sum), dist.all_sum(correct), dist.all_sum(count)
        if class_n is not None:
            class_n, class_correct = dist.all_sum(class_n), dist.all_sum(class_correct)
    n = max(1, int(count))
    return {"loss": float(loss_sum) / n, "acc": float(correct) / n, "n": int(count),
            "class_correct": [] if class_n is None else class_correct.tolist(),
            "class_n": [] if class_n is None else class_n.tolist()}


def per_class_accuracy(classes, result: dict) -> dict:
    """``{class: {"acc", "n"}}`` from :func:`evaluate`'s counts (acc None for an empty class)."""
    return {name: {"acc": (c / n) if n else None, "n": int(n)}
            for name, c, n in zip(classes, result.get("class_correct") or [], result.get("class_n") or [])}


def fit(config: TrainConfig, callbacks: Iterable[Callback] = (), stop: Any = None) -> dict:
    """Train one model as ``config`` says; report through ``callbacks``.

    Args:
        config: the run's options (None fields take the architecture's defaults).
        callbacks: extra callbacks (e.g. ``TqdmCallback()``); with ``config.out`` a
            ``ProgressFileCallback`` for the run folder is added.
        stop: optional ``threading.Event`` or callable; when it turns true the run ends after
            the current batch (status "stopped"). The run's STOP file works the same way.

    Returns:
        plain dict: status ("finished" | "stopped"), run_dir, arch, task, classes, device,
        epochs_run, best_epoch, best {epoch, train_loss, train_acc, val_loss, val_acc},
        final (last epoch's metrics), test_loss/test_acc (when the data has a test split,
        with the best weights), early_stopped, n_train, n_val, n_test, seconds.

    Raises:
        ValueError: an invalid option (before any run folder is created).
        DatasetError, CheckpointError, RuntimeError, ...: the run is marked "failed" first.
    """
    started = time.monotonic()
    config = config.resolved()
    device = select_device(config.device)
    dist = Dist.from_env(device)
    run = None
    if config.out and dist.is_main:
        out = Path(config.out).expanduser()
        run = runs.create_run(out.parent, config, name=out.name, arch=config.arch,
                              device=describe_device(device), world_size=dist.world_size)
    cbs = CallbackList([*callbacks, ProgressFileCallback(run.path) if run else None]
                       if dist.is_main else [])
    signal = StopSignal(stop, run.path if run else (Path(config.out) if config.out else None))
    try:
        result = _fit(config, device, dist, run, cbs, signal, started)
    except KeyboardInterrupt:
        # A second Ctrl-C (the first asks for a clean stop): the best checkpoint is intact.
        if run is not None:
            runs.update_status(run, "stopped", stop_reason="interrupted from the keyboard")
        raise
    except BaseException as exc:
        if run is not None:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            runs.update_status(run, "failed", error=message)
        raise
    if run is not None:
        runs.update_status(run, result["status"], metrics=_run_metrics(result),
                           stop_reason=signal.reason)
    cbs.on_train_end(result)
    return result


def _run_metrics(result: dict) -> dict:
    keep = ("best_epoch", "epochs_run", "early_stopped", "test_loss", "test_acc", "seconds")
    return {**{f"best_{k}": v for k, v in (result.get("best") or {}).items() if k != "epoch"},
            **{k: result.get(k) for k in keep if k in result}}


def _fit(config: TrainConfig, device: torch.device, dist: Dist, run, cbs: CallbackList,
         signal: StopSignal, started: float) -> dict:
    _seed_everything(config.seed + dist.rank)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    try:
        data = load_train_data(config, device, cbs, dist, stop=signal)
    except StopBeforeTraining:
        return {"status": "stopped", "run_dir": str(run.path) if run else None,
                "arch": config.arch, "epochs_run": 0, "best_epoch": None, "best": None,
                "final": None, "early_stopped": False, "history": [],
                "seconds": round(time.monotonic() - started, 3)}
    if run is not None:
        runs.update_run(run, task=data.task, classes=list(data.classes),
                        dataset=data.dataset_summary)

    from core.models import build_model

    model = build_model(config.arch, num_classes=len(data.classes), pretrained=config.pretrained,
                        head=config.head, freeze=config.freeze)
    trainable = trainable_part(model) if data.embedding else model
    channels_last = device.type == "cuda" and not data.embedding
    trainable.to(device, memory_format=torch.channels_last) if channels_last else trainable.to(device)
    params = [p for p in trainable.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"freeze={config.freeze!r} leaves no trainable parameters in {config.arch}")
    net = dist.wrap(trainable)
    optimizer = _build_optimizer(config, params)
    per_rank = math.ceil(len(data.train_y) / dist.world_size)
    steps_per_epoch = max(1, math.ceil(per_rank / config.batch_size))
    scheduler, per_step = _build_scheduler(config, optimizer, steps_per_epoch)
    dtype = amp_dtype(device) if not data.embedding else None
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    generator = torch.Generator(device=device).manual_seed(config.seed * 1000 + dist.rank)

    pipeline = BatchPipeline(data, config, device, generator, channels_last)
    prepare, batches = pipeline.prepare, pipeline.batches

    def run_eval(x, y) -> dict:
        shard = dist.world_size > 1 and len(y) >= dist.world_size
        if shard:  # each rank scores every world_size-th row; evaluate() sums over ranks (eval
            # mode has no batch statistics, so the result is the single-process one)
            x, y = x[dist.rank::dist.world_size], y[dist.rank::dist.world_size]
            dist.broadcast_buffers(trainable)  # BN running stats: rank 0's (the checkpoint's)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return evaluate(trainable, x, y, prepare, config.batch_size * 2, dist if shard else None)

    info = {"config": config.to_dict(), "classes": list(data.classes), "task": data.task,
            "device": describe_device(device), "epochs": config.epochs,
            "n_train": len(data.train_y), "n_val": len(data.val_y), "n_test": len(data.test_y),
            "run_dir": str(run.path) if run else None}
    cbs.on_train_start(info)
    cbs.on_phase("training", {"steps_per_epoch": steps_per_epoch, "world_size": dist.world_size})

    best: dict | None = None
    best_state: dict = {}
    history: list[dict] = []
    early_stopped = False
    bad_epochs = 0
    for epoch in range(1, config.epochs + 1):
        cbs.on_epoch_start(epoch, config.epochs)
        t0 = time.monotonic()
        trainable.train()
        order = epoch_indices(data, config, epoch, dist)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen, shown_loss = 0, float("nan")
        last_sync = 0.0
        chunks = batch_chunks(order, config.batch_size)
        total = len(chunks)
        for step, (x, y) in enumerate(batches(chunks), start=1):
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = net(x)
                loss = criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if per_step:
                scheduler.step()
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            now = time.monotonic()
            if step == total or now - last_sync > 0.25:  # .item() syncs a GPU: not every batch
                shown_loss, last_sync = float(loss_sum) / seen, now
            cbs.on_batch_end(step, total, {"epoch": epoch, "loss": shown_loss, "images": seen,
                                           "lr": optimizer.param_groups[0]["lr"]})
            if dist.any(signal()):
                signal.reason = signal.reason or "stop requested on another rank"
                break
        if signal() and (best is not None or seen == 0):
            break  # stopped mid-epoch: keep the best checkpoint as it is
        n_train = dist.all_sum(torch.tensor(seen, device=device))
        train = {"loss": float(dist.all_sum(loss_sum)) / max(1, int(n_train)),
                 "acc": float(dist.all_sum(correct)) / max(1, int(n_train))}
        val = run_eval(data.val_x, data.val_y)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None and not per_step:
            scheduler.step(val["loss"])
        improved = best is None or val["loss"] < best["val_loss"] - CHECKPOINT_MIN_DELTA
        metrics = {"epoch": epoch, "train_loss": train["loss"], "train_acc": train["acc"],
                   "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr,
                   "seconds": round(time.monotonic() - t0, 3), "best": improved}
        partial = signal()  # stopped during the first epoch: a partial epoch, still saved
        if partial:
            metrics["partial"] = True
        history.append(metrics)
        if improved:
            best = {k: metrics[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")}
            if run is None:  # no checkpoint file to return to for the test score: keep a copy
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bad_epochs = 0
        else:
            bad_epochs += 1
        if run is not None:
            _save(run.path / runs.LAST_CHECKPOINT, model, data, config, metrics)
            if improved:
                _save(run.path / runs.CHECKPOINT, model, data, config, metrics)
            # The best checkpoint's per-class val accuracy (Runs page comparison); a top-level
            # key, since the final update_status replaces "metrics" wholesale.
            extra = {"val_per_class": {"epoch": epoch, "classes": per_class_accuracy(data.classes, val)}} \
                if improved else {}
            runs.update_run(run, metrics={**{f"best_{k}": v for k, v in best.items() if k != "epoch"},
                                          "best_epoch": best["epoch"], "epochs_run": epoch}, **extra)
        cbs.on_epoch_end(epoch, metrics)
        if partial:
            break
        if config.patience and bad_epochs >= config.patience:
            early_stopped = True
            break

    result = {"status": "stopped" if signal() else "finished",
              "run_dir": str(run.path) if run else None, "arch": config.arch, "task": data.task,
              "classes": list(data.classes), "device": describe_device(device),
              "world_size": dist.world_size, "epochs_run": len(history),
              "best_epoch": best["epoch"] if best else None, "best": best,
              "final": history[-1] if history else None, "early_stopped": early_stopped,
              "n_train": len(data.train_y), "n_val": len(data.val_y), "n_test": len(data.test_y)}
    if len(data.test_y) and best is not None and not signal():
        if run is not None:  # the test score is the best checkpoint's, not the last epoch's
            checkpoint = run.path / runs.CHECKPOINT
            best_state = torch.load(checkpoint, map_location=device, weights_only=True)["model_state"]
        model.load_state_dict(best_state)
        test = run_eval(data.test_x, data.test_y)
        result.update(test_loss=test["loss"], test_acc=test["acc"])
    result["seconds"] = round(time.monotonic() - started, 3)
    result["history"] = history
    dist.barrier()
    return result


def _save(path: Path, model: nn.Module, data: TrainData, config: TrainConfig, metrics: dict) -> None:
    runs.save_checkpoint(
        path, model_state=model.state_dict(), arch=config.arch,
        classes=list(data.classes), task=data.task, head=config.head,
        preprocessing=data.preprocessing, config=config.to_dict(),
        metrics={k: v for k, v in metrics.items()}, epoch=int(metrics["epoch"]))
