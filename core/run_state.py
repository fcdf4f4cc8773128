"""What a live UI shows about a run, read from its files; and the Train form's defaults.

:func:`run_state` turns a run folder (run.json, progress.jsonl, history.jsonl, train.log) into one
plain dict: phase, progress fraction, epoch/step, ETA, latest loss and learning rate, the epoch
history for the curves, and the final metrics. It reads only the tail of the progress file, so a
page can poll it every second during a long run.
"""
from __future__ import annotations

import time
from pathlib import Path

from core import runs

PROGRESS_TAIL = 200  # progress events read per poll: enough to hold the latest phase and batch


def pretrained_note(arch: str) -> str | None:
    """None when ``arch`` can start from ImageNet weights here; else why not, honestly.

    dlib_face is always "pretrained" (its embedder ships with the package); torchvision
    architectures need their ImageNet file in the torch hub cache, since these machines
    cannot download it.
    """
    from core.models import get_model_spec, imagenet_available, weights_path
    from core.models.torchvision_models import IMAGENET_WEIGHTS

    if get_model_spec(arch).is_embedding:
        return None
    if arch not in IMAGENET_WEIGHTS:
        return f"{arch} has no ImageNet weights: train it from scratch"
    if imagenet_available(arch):
        return None
    path = weights_path(IMAGENET_WEIGHTS[arch])
    return (f"ImageNet weights for {arch} are not in the torch cache and cannot be downloaded "
            f"here: place {path.name} at {path} to use them, or train from scratch")


def form_defaults(arch: str) -> dict:
    """The Train form's values for ``arch``: its defaults (``core.models.ARCH_DEFAULTS``), with
    pretrained on only when the weights are really here.

    Returns:
        dict: image_size, batch_size, lr, epochs, head, freeze, freeze_choices, is_embedding,
        pretrained (recommended and available), pretrained_available, pretrained_note, paper.
    """
    from core.config import TrainConfig
    from core.models import freeze_choices, get_model_spec

    spec = get_model_spec(arch)
    resolved = TrainConfig(data=".", arch=arch).resolved()
    note = pretrained_note(arch)
    return {"arch": arch, "image_size": resolved.image_size, "batch_size": resolved.batch_size,
            "lr": resolved.lr, "epochs": resolved.epochs, "head": spec.head,
            "freeze": spec.freeze, "freeze_choices": freeze_choices(arch),
            "is_embedding": spec.is_embedding, "pretrained": spec.pretrained and note is None,
            "pretrained_available": note is None, "pretrained_note": note, "paper": spec.paper}


def _phase_text(event: dict) -> str:
    phase = str(event.get("phase", ""))
    if "done" in event and "total" in event:
        return f"{phase.capitalize()}: {event['done']}/{event['total']} photos"
    return {"loading": "Reading the dataset", "dataset": "Dataset found",
            "training": "Training", "embedding": "Embedding faces"}.get(phase, phase.capitalize())


def run_state(run: str | Path | runs.Run, root: str | Path | None = None) -> dict:
    """The live state of a run, as a plain dict for a page.

    Returns:
        name, path, status (running/finished/stopped/failed/interrupted/damaged), active,
        stop_requested, phase (text), arch, task, classes, device, data (dataset folder),
        epoch, epochs, step, total (batches in the epoch), fraction (0..1 of all batches),
        eta_seconds (None until known), loss (running mean of the current epoch), lr, batches
        (recent {x: fractional epoch, loss} points of that running mean),
        history (epoch rows: train_loss, train_acc, val_loss, val_acc, lr, ...), last (the latest
        epoch row or None), metrics (run.json's best metrics), error, elapsed_seconds, log_tail
        (the last lines of train.log when the run failed or was interrupted).
    """
    current = run if isinstance(run, runs.Run) else runs.load_run(run, root)
    current = current.refresh() if isinstance(run, runs.Run) else current
    info, config = current.info, current.config
    events = current.progress(last=PROGRESS_TAIL)
    history = current.history()
    status = current.status
    epochs = int(config.get("epochs") or 0) or None
    state = {"name": current.name, "path": str(current.path), "status": status,
             "active": status == "running", "stop_requested": runs.stop_requested(current),
             "arch": current.arch, "task": current.task, "classes": current.classes,
             "device": info.get("device"), "data": config.get("data"),
             "epoch": 0, "epochs": epochs, "step": 0, "total": 0, "fraction": 0.0,
             "eta_seconds": None, "loss": None, "lr": None, "phase": "Starting",
             "history": history, "last": history[-1] if history else None,
             "metrics": current.metrics, "error": info.get("error") or current.error,
             "elapsed_seconds": current.duration_seconds, "log_tail": ""}
    batch = next((e for e in reversed(events) if e.get("event") == "batch"), None)
    phase = next((e for e in reversed(events) if e.get("event") == "phase"), None)
    if phase is not None:
        state["phase"] = _phase_text(phase)
    if history:
        state.update(epoch=int(history[-1]["epoch"]), lr=history[-1].get("lr"))
        if epochs:
            state["fraction"] = min(1.0, state["epoch"] / epochs)
    if batch is not None and int(batch.get("epoch", 0)) >= state["epoch"]:
        epochs = int(batch.get("epochs") or epochs or 1)
        epoch, step, total = int(batch["epoch"]), int(batch["step"]), max(1, int(batch["total"]))
        eta = batch.get("eta_seconds")
        if eta is not None and status == "running":
            # The event is from a moment ago: count the time since then as done.
            eta = max(0.0, float(eta) - max(0.0, time.time() - float(batch.get("time", 0))))
        state.update(epoch=epoch, epochs=epochs, step=step, total=total, loss=batch.get("loss"),
                     lr=batch.get("lr"), eta_seconds=eta,
                     fraction=min(1.0, ((epoch - 1) * total + step) / (epochs * total)))
        if status == "running":
            state["phase"] = f"Training: epoch {epoch}/{epochs}, batch {step}/{total}"
    # The running loss inside epochs, for a live curve between the epoch points (x in epochs).
    state["batches"] = [{"x": int(e["epoch"]) - 1 + int(e["step"]) / max(1, int(e["total"])),
                         "loss": e["loss"]} for e in events
                        if e.get("event") == "batch" and e.get("loss") is not None]
    if status == "finished":
        state.update(fraction=1.0, eta_seconds=0.0, phase="Finished")
    elif status != "running":
        state["eta_seconds"] = None
        state["phase"] = status.capitalize()
    if status in ("failed", "interrupted", "damaged"):
        from core.launcher import LOG_FILE, tail

        state["log_tail"] = tail(current.path / LOG_FILE)
    return state
