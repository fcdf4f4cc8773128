"""Callbacks: how the training loop reports, without knowing who listens.

The loop calls every hook of every callback; the CLI adds a tqdm bar, ``fit`` adds the progress
file of the run folder (the dashboard polls it). A hook must not raise for the loop's sake: an
exception in a callback fails the run like any other error.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable

from core.runs import HISTORY, PROGRESS, append_jsonl


class Callback:
    """Base class: every hook is a no-op; override the ones you need.

    Hooks:
        on_train_start(info): info has config, classes, task, device, n_train, n_val, run_dir.
        on_phase(phase, info): "preparing" (detecting/cropping photos), "embedding", "training".
        on_epoch_start(epoch, total_epochs)
        on_batch_end(step, total, metrics): step counts from 1 within the epoch; metrics has
            epoch, loss (running mean), lr, images.
        on_epoch_end(epoch, metrics): epoch, train_loss, train_acc, val_loss, val_acc, lr,
            seconds, best (bool).
        on_train_end(result): the dict ``fit`` returns.
    """

    def on_train_start(self, info: dict) -> None: ...

    def on_phase(self, phase: str, info: dict) -> None: ...

    def on_epoch_start(self, epoch: int, total_epochs: int) -> None: ...

    def on_batch_end(self, step: int, total: int, metrics: dict) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict) -> None: ...

    def on_train_end(self, result: dict) -> None: ...


class CallbackList(Callback):
    """Fans every hook out to several callbacks, in order."""

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.callbacks = [c for c in callbacks if c is not None]

    def _call(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def on_train_start(self, info):
        self._call("on_train_start", info)

    def on_phase(self, phase, info):
        self._call("on_phase", phase, info)

    def on_epoch_start(self, epoch, total_epochs):
        self._call("on_epoch_start", epoch, total_epochs)

    def on_batch_end(self, step, total, metrics):
        self._call("on_batch_end", step, total, metrics)

    def on_epoch_end(self, epoch, metrics):
        self._call("on_epoch_end", epoch, metrics)

    def on_train_end(self, result):
        self._call("on_train_end", result)


class _Eta:
    """Seconds left, from the mean time per step of the training so far."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.epochs = 1
        self.steps_done = 0
        self.eval_seconds = 0.0

    def update(self, epoch: int, step: int, total: int) -> float | None:
        self.steps_done += 1
        elapsed = time.monotonic() - self.start
        if self.steps_done < 2:
            return None
        per_step = elapsed / self.steps_done
        remaining = (total - step) + (self.epochs - epoch) * total
        return per_step * remaining


class ProgressFileCallback(Callback):
    """Writes ``progress.jsonl`` (small events, throttled) and ``history.jsonl`` (per epoch).

    Progress events (one JSON object per line; ``event`` says which)::

        {"event": "start", "time", "epochs", "n_train", "n_val", "classes", "device"}
        {"event": "phase", "phase": "preparing", ...}
        {"event": "batch", "time", "epoch", "epochs", "step", "total", "loss", "lr", "eta_seconds"}
        {"event": "epoch", "time", "epoch", "epochs", "train_loss", "train_acc", "val_loss",
         "val_acc", "lr", "seconds", "best"}
        {"event": "end", "time", "status", ...result}

    Args:
        run_dir: the run folder.
        every_seconds: at most one batch event per this many seconds (plus the last batch of
            each epoch), so a fast GPU run does not write thousands of lines.
    """

    def __init__(self, run_dir: str | Path, every_seconds: float = 0.5):
        self.dir = Path(run_dir)
        self.every = every_seconds
        self._last = 0.0
        self._eta = _Eta()

    def _write(self, event: dict) -> None:
        append_jsonl(self.dir / PROGRESS, {"time": round(time.time(), 3), **event}, fsync=False)

    def on_train_start(self, info):
        self._eta = _Eta()
        self._eta.epochs = int(info.get("epochs") or 1)
        self._write({"event": "start", **{k: info.get(k) for k in
                                          ("epochs", "n_train", "n_val", "classes", "device")}})

    def on_phase(self, phase, info):
        self._write({"event": "phase", "phase": phase, **info})

    def on_batch_end(self, step, total, metrics):
        epoch = int(metrics.get("epoch", 1))
        eta = self._eta.update(epoch, step, total)
        now = time.monotonic()
        if step != total and now - self._last < self.every:
            return
        self._last = now
        self._write({"event": "batch", "epoch": epoch, "epochs": self._eta.epochs, "step": step,
                     "total": total, "loss": _round(metrics.get("loss")),
                     "lr": metrics.get("lr"), "eta_seconds": _round(eta, 1)})

    def on_epoch_end(self, epoch, metrics):
        row = {"epoch": epoch, **{k: _round(v) if isinstance(v, float) else v
                                  for k, v in metrics.items() if k != "epoch"}}
        # history.jsonl is the durable record: fsync it (one line per epoch, cheap).
        append_jsonl(self.dir / HISTORY, row, fsync=True)
        self._write({"event": "epoch", "epochs": self._eta.epochs, **row})

    def on_train_end(self, result):
        self._write({"event": "end", **{k: v for k, v in result.items() if k != "history"}})


def _round(value, digits: int = 5):
    return None if value is None else round(float(value), digits)


class TqdmCallback(Callback):
    """A tqdm bar on stderr for the command line: one bar per epoch, metrics in the postfix."""

    def __init__(self, **tqdm_kwargs: Any):
        self.kwargs = {"dynamic_ncols": True, "leave": True, **tqdm_kwargs}
        self.bar = None
        self.epochs = 1

    def on_train_start(self, info):
        self.epochs = int(info.get("epochs") or 1)

    def on_phase(self, phase, info):
        import sys

        detail = ", ".join(f"{k}={v}" for k, v in info.items() if not isinstance(v, (list, dict)))
        print(f"[{phase}] {detail}", file=sys.stderr, flush=True)

    def on_epoch_start(self, epoch, total_epochs):
        from tqdm import tqdm

        self._close()
        self.bar = tqdm(total=None, desc=f"epoch {epoch}/{total_epochs}", unit="batch", **self.kwargs)

    def on_batch_end(self, step, total, metrics):
        if self.bar is None:
            return
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}",
                             lr=f"{metrics.get('lr', 0):.2e}", refresh=False)

    def on_epoch_end(self, epoch, metrics):
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics['train_loss']:.4f}",
                                 acc=f"{metrics['train_acc']:.3f}",
                                 val_loss=f"{metrics['val_loss']:.4f}",
                                 val_acc=f"{metrics['val_acc']:.3f}")
        self._close()

    def on_train_end(self, result):
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
