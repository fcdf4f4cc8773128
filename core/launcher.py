"""Start, find, watch and stop background training runs (what the Train page calls).

    from core.launcher import launch, active_run, run_state, stop_run
    started = launch(TrainConfig(data="../shared/data/five_celeb", arch="resnet18"))
    run_state(started.path)["fraction"]     # 0..1, with epoch, step, eta_seconds, loss, lr ...
    stop_run(started.path)                  # stops after the current batch, best checkpoint kept

A run is ``python -m core.train ...`` (or ``python -m torch.distributed.run --standalone
--nproc_per_node N -m core.train ...``) in its own session (``start_new_session``), so it outlives
the page's script run, the browser tab and even the dashboard server. Nothing about it is kept in
memory: the runs store (run.json, progress.jsonl, history.jsonl) is the only truth, so a reload or
a second tab finds the same run.

One run at a time: :func:`launch` holds an ``fcntl.flock`` on ``<runs root>/.launch.lock`` from
its "is anything running?" check until the new run's run.json exists, so two tabs pressing Launch
at the same instant cannot both start one; the second is refused with the first one's name.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from core import runs
from core.config import TrainConfig
from core.run_state import form_defaults, pretrained_note, run_state  # noqa: F401 (re-exported)
from core.train import config_to_args

ROOT = Path(__file__).resolve().parents[1]
LOG_FILE = "train.log"
LOCK_FILE = ".launch.lock"
PENDING_DIR = ".launch"      # logs of runs whose run.json does not exist yet
START_TIMEOUT = 300.0        # seconds for the child to import torch and write run.json
# A lock wait longer than a launch can take means something is stuck: give up with a message.
LOCK_TIMEOUT = START_TIMEOUT + 30


class LaunchError(ValueError):
    """A run that cannot be started (bad option, bad dataset, one already running...)."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """A started run: its name and folder, the child's pid, its log and the command."""

    name: str
    path: Path
    pid: int
    log: Path
    command: tuple[str, ...]
    nproc: int = 1


# -- launching -------------------------------------------------------------------------------------

@contextlib.contextmanager
def _launch_lock(root: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LaunchError("another launch has been starting for too long; try again "
                                      "in a minute") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock (also when the process dies)


def active_run(root: str | Path | None = None) -> runs.Run | None:
    """The run that is training now (status running and its process alive), or None."""
    active = [r for r in runs.list_runs(root) if r.is_active]
    return active[0] if active else None


def command_for(config: TrainConfig, nproc: int = 1) -> list[str]:
    """The command line of a run: ``core.train`` itself, or under torchrun for ``nproc`` > 1."""
    train = ["-m", "core.train", *config_to_args(config), "--no-progress"]
    if nproc <= 1:
        return [sys.executable, *train]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(nproc), *train]


def _check(config: TrainConfig, nproc: int) -> TrainConfig:
    """Everything that can be refused before a process starts, with the user's message."""
    from core.data import DatasetError, discover_dataset

    try:
        resolved = config.resolved()
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    try:
        discover_dataset(config.data, task=None if config.task == "auto" else config.task,
                         split=config.split, seed=config.seed)
    except DatasetError as exc:
        raise LaunchError(f"dataset: {exc}") from None
    if config.pretrained:
        note = pretrained_note(config.arch)
        if note is not None:
            raise LaunchError(note)
    if not isinstance(nproc, int) or nproc < 1:
        raise LaunchError(f"nproc must be an integer >= 1, got {nproc!r}")
    if nproc > 1 and config.device != "cpu":
        import torch

        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise LaunchError(f"{nproc} processes asked for but this machine has {gpus} GPU(s); "
                              f"use at most {max(gpus, 1)} (or device cpu to test on the CPU)")
    return resolved


def launch(config: TrainConfig, *, name: str | None = None, root: str | Path | None = None,
           nproc: int = 1, start_timeout: float = START_TIMEOUT,
           env: dict | None = None) -> Launch:
    """Start ``config`` as a detached background run; return once its run.json exists.

    Args:
        config: the run's options; ``config.out`` is replaced by ``<root>/<name>``.
        name: the run's folder name (default ``<arch>-<YYYYmmdd-HHMMSS>``); an existing one is
            refused.
        root: runs root (default ``$FACELAB_RUNS`` or ``weights/``).
        nproc: processes (one per local GPU) under ``torch.distributed.run``; 1 = plain.
        start_timeout: seconds to wait for the run folder before giving up (the child is then
            stopped and its log tail reported).
        env: extra environment variables for the child.

    Returns:
        :class:`Launch`; the run's log is ``<run>/train.log``.

    Raises:
        LaunchError: a bad option or dataset, a run already active (named), an existing name,
            or a child that exited or hung before creating its run (its log tail included).
    """
    root = Path(root).expanduser() if root is not None else runs.default_runs_root()
    root = root.resolve()
    with _launch_lock(root):
        current = active_run(root)
        if current is not None:
            raise LaunchError(f"run '{current.name}' is still training: stop it or wait for it to "
                              f"finish before launching another")
        if name is None:
            name = runs._unique_name(root, config.arch)
        try:
            runs.validate_name(name)
        except runs.RunError as exc:
            raise LaunchError(str(exc)) from None
        out = root / name
        if out.exists():
            raise LaunchError(f"a run named '{name}' already exists in {root}: choose another name")
        config = dataclasses.replace(config, out=str(out))
        _check(config, nproc)
        command = command_for(config, nproc)
        pending = root / PENDING_DIR / f"{name}.log"
        pending.parent.mkdir(parents=True, exist_ok=True)
        child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1",
                     "PYTHONPATH": os.pathsep.join(
                         p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        with open(pending, "ab") as log:
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            # Own session: the run survives the page, the tab and a restart of the server, and a
            # signal to the server's process group does not reach it.
            child = subprocess.Popen(command, cwd=ROOT, env=child_env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # Reap it when it ends, so a finished child is not left as a zombie of the server.
        threading.Thread(target=child.wait, name=f"reap-{name}", daemon=True).start()
        _wait_for_run(out, child, pending, start_timeout)
        log_path = out / LOG_FILE
        # The child keeps writing to the same open file: a rename moves it, not the data.
        os.replace(pending, log_path)
        runs.update_run(out, launch={"command": command, "pid": child.pid, "log": LOG_FILE,
                                     "nproc": nproc, "launched": runs._now()})
    return Launch(name, out, child.pid, log_path, tuple(command), nproc)


def _wait_for_run(out: Path, child: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (out / runs.RUN_JSON).is_file():
        code = child.poll()
        if code is not None:
            raise LaunchError(f"training exited (code {code}) before it started:\n"
                              f"{tail(log)}")
        if time.monotonic() > deadline:
            _kill(child)
            raise LaunchError(f"training did not start within {timeout:.0f} s and was stopped:\n"
                              f"{tail(log)}")
        time.sleep(0.2)


def _kill(child: subprocess.Popen) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=10)


def tail(path: str | Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file ("" when it does not exist)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_run(run: str | Path | runs.Run, root: str | Path | None = None) -> runs.Run:
    """Ask a running run to stop after its current batch (its best checkpoint is kept).

    Raises:
        LaunchError: the run is not running (the message says its status).
    """
    current = runs.load_run(run, root)
    if not current.is_active:
        raise LaunchError(f"run '{current.name}' is not running (status {current.status})")
    runs.request_stop(current.path, reason="stopped from the dashboard")
    return current

