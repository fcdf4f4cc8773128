"""Crash-safe files and process identity, for the runs store (no torch, no project imports).

* Whole files are written to a temporary file beside the target, fsynced, then ``os.replace``d:
  a process killed at any moment leaves the old file or the new one, never half of one.
* JSON-lines files are appended one line per ``write``; a kill can tear only the last line, and
  :func:`read_jsonl` skips it (the next append starts on a fresh line).
* A process is identified by pid + start time (``/proc/<pid>/stat``) + boot id + host, so a
  recycled pid or a reboot is not mistaken for the original process still running.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

# -- atomic files ---------------------------------------------------------------------------------

def _fsync_dir(path: Path) -> None:
    # The rename itself is only durable once the directory entry is flushed.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and ``os.replace`` it there.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; run files are meant to be readable
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _to_plain(obj: Any) -> Any:
    """JSON-able copy: dataclasses -> dicts, Paths -> str, tuples -> lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as pretty JSON, atomically (tmp + fsync + os.replace)."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
    write_bytes_atomic(path, (text + "\n").encode())


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def append_jsonl(path: str | Path, obj: Any, *, fsync: bool = True) -> None:
    """Append one JSON object as one line (one ``write`` call, flushed and fsynced).

    A process killed mid-write can leave at most a torn last line, which :func:`read_jsonl`
    skips; O_APPEND keeps concurrent appenders' lines whole on a local file system.
    """
    line = json.dumps(obj, default=_json_default, separators=(",", ":")) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # A torn previous line (killed writer) would swallow this one: start on a fresh line.
        if os.fstat(fd).st_size > 0:
            with open(path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = "\n" + line
        os.write(fd, line.encode())
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _parse_lines(data: bytes) -> list[dict]:
    out = []
    for raw in data.splitlines():
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError:
            continue  # torn write of a killed process
        if isinstance(obj, dict):
            out.append(obj)
    return out


def read_jsonl(path: str | Path, *, last: int | None = None) -> list[dict]:
    """Objects of a JSON-lines file; unparsable lines (a torn last line) are skipped.

    Args:
        path: the file; a missing file reads as an empty list.
        last: only the last N objects, read from the end of the file (a UI polling a long
            run's progress file does not re-read all of it).
    """
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return []
    with handle:
        if not last:
            return _parse_lines(handle.read())
        size = handle.seek(0, os.SEEK_END)
        block, data = 8192, b""
        while True:
            start = max(0, size - block)
            handle.seek(start)
            data = handle.read(size - start)
            found = _parse_lines(data if start == 0 else data.split(b"\n", 1)[-1])
            if start == 0 or len(found) >= last:
                return found[-last:]
            block *= 4


# -- process liveness ------------------------------------------------------------------------------

def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), or None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and ')': split after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        if fields[0] in ("Z", "X"):  # zombie: dead, only not yet reaped by its parent
            return -1
        return int(fields[19])  # field 22 overall = starttime
    except (IndexError, ValueError):
        return None


def process_identity(pid: int | None = None) -> dict:
    """What identifies a live process across pid reuse: pid, start ticks, boot id, host."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "pid_start": _proc_start_ticks(pid), "boot_id": _boot_id(),
            "host": socket.gethostname()}


def process_alive(info: dict) -> bool | None:
    """Is the process recorded in ``info`` (keys of :func:`process_identity`) still running?

    Returns None when it cannot be told (the run was started on another host).
    """
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if info.get("host") and info["host"] != socket.gethostname():
        return None
    boot = _boot_id()
    if info.get("boot_id") and boot and info["boot_id"] != boot:
        return False  # the machine rebooted since: every process of that boot is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    start = _proc_start_ticks(pid)
    if start == -1:
        return False
    recorded = info.get("pid_start")
    if recorded is not None and start is not None and start != recorded:
        return False  # the pid was reused by a newer process
    return True
