"""Start, wait for and stop the dashboard's `streamlit run` server; Debian's chromium settings.

Shared by ``bench/app.py`` and the browser tests (``tests/browser/conftest.py``), so both drive
the app exactly as ``make run`` serves it. Not a page and not core: the dashboard never imports
it.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

CHROMIUM = Path(os.environ.get("FACELAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


class ServerNotHealthy(RuntimeError):
    """The server exited or did not answer in time (the message ends with its log's tail)."""


def server_flags(port: int) -> list[str]:
    """The options after ``streamlit run streamlit_app.py``: loopback only, no browser opened,
    no usage statistics, and no reruns when a source file changes while it is measured."""
    return ["--server.address", "127.0.0.1", "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_healthy(url: str, server: subprocess.Popen, log: Path, limit: float) -> None:
    """Return once ``url``'s health endpoint answers; raise :class:`ServerNotHealthy` when the
    server exits first or ``limit`` seconds pass."""
    deadline = time.monotonic() + limit
    while True:
        if server.poll() is not None:
            raise ServerNotHealthy(f"streamlit exited with code {server.returncode}; log {log}:\n"
                                   f"{tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServerNotHealthy(f"streamlit not healthy after {limit:.0f} s; log {log}:\n"
                                   f"{tail(log)}")
        time.sleep(0.1)


def stop(server: subprocess.Popen) -> None:
    """Stop the server's whole process group (it was started with ``start_new_session``)."""
    if server.poll() is not None:
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=15)
    except ProcessLookupError:
        pass


def wait_idle(page) -> None:
    """Wait until the page's script run has ended. Only the "Running..." state: the same widget
    also offers "Rerun" when a source file changes."""
    from playwright.sync_api import expect

    expect(page.get_by_test_id("stStatusWidget").filter(has_text="Running")).to_have_count(0)
