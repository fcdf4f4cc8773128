"""Browser-test fixtures: a real `streamlit run` server and Debian's chromium driven by Playwright.

The browser is the system's /usr/bin/chromium (installed by `.ci/run` with apt); Playwright's own
browser download (`playwright install`) is never used. Without chromium the tests skip locally
and fail under CI=true (tests.conftest.require).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from bench.streamlit_server import (CHROMIUM, CHROMIUM_ARGS, ServerNotHealthy, free_port,
                                    server_flags, stop, wait_healthy)
from tests.conftest import ROOT, require

SERVER_START_SECONDS = 90
# Playwright's per-action and per-expect wait: the first detection also imports torch and loads
# the detector, on a 2-core machine that may be running other tests.
PAGE_TIMEOUT_MS = 120_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


# How much of the page's accessibility tree goes into a failure report.
FAILURE_SNAPSHOT_CHARS = 6_000


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """When a browser test fails, add what the page showed to its report: a screenshot under
    pytest's tmp folder and the page's accessibility tree (what `get_by_role` searches). A CI
    log is often all there is of a failure, so it has to say what was on the screen."""
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and report.failed and page is not None:
        report.sections.append(("page at failure", _describe_page(page, item)))
    return report


def _describe_page(page, item: pytest.Item) -> str:
    lines = [f"url: {page.url}"]
    try:
        folder = item.config._tmp_path_factory.getbasetemp() / "failures"
        folder.mkdir(exist_ok=True)
        path = folder / f"{item.name}.png"
        page.screenshot(path=str(path), full_page=True, timeout=30_000)
        lines.append(f"screenshot: {path}")
        tree = page.locator("body").aria_snapshot(timeout=30_000)
        if len(tree) > FAILURE_SNAPSHOT_CHARS:
            tree = tree[:FAILURE_SNAPSHOT_CHARS] + f"\n... ({len(tree)} characters in all)"
        lines.append(tree)
    except Exception as exc:  # the page may be gone (a crashed tab): say so, keep the failure
        lines.append(f"(could not read the page: {type(exc).__name__}: {exc})")
    return "\n".join(lines)


@pytest.fixture(scope="session")
def browser():
    """A headless chromium (Debian's), shared by the session."""
    require(CHROMIUM.exists(), f"{CHROMIUM} not found: install Debian's chromium "
                               "(apt-get install -y chromium); `playwright install` is not used")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextlib.contextmanager
def streamlit_server(workdir: Path, env: dict | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start the dashboard exactly as `make run` does, on a free port, with its runs and caches
    under ``workdir``; yields ``(url, process)`` and stops the whole process tree at the end.

    Tests that need their own server (e.g. to SIGKILL it mid-run) use this directly; ``env``
    overrides variables (FACELAB_RUNS, FACELAB_CACHE, ...).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "streamlit.log"
    port = free_port()
    # Runs and caches in tmp: the tests never touch the repository's weights/.
    env = {**os.environ, "FACELAB_CACHE": str(workdir / "cache"), "FACELAB_RUNS": str(workdir / "runs"),
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", **(env or {})}
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", *server_flags(port)]
    with open(log_path, "ab") as log:
        # Own process group (start_new_session) so the whole tree is stopped at the end.
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_healthy(url, server, log_path, SERVER_START_SECONDS)
        except ServerNotHealthy as exc:
            pytest.fail(str(exc))
        print(f"\nstreamlit at {url}, log {log_path}")
        yield url, server
    finally:
        stop(server)


@pytest.fixture(scope="session")
def app_dir(tmp_path_factory) -> Path:
    """The shared server's folder: its runs are in ``app_dir / "runs"``, caches in ``cache``."""
    return tmp_path_factory.mktemp("streamlit")


@pytest.fixture(scope="session")
def app_url(browser, app_dir) -> Iterator[str]:
    """The dashboard shared by the browser tests (one server per session)."""
    with streamlit_server(app_dir) as (url, _server):
        yield url


@pytest.fixture
def page(browser, app_url):
    """A fresh browser tab (own context: no shared session state) on the dashboard."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    tab = context.new_page()
    tab.goto(app_url)
    yield tab
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def screenshot(screenshot_dir, request) -> Callable[..., Path]:
    """``screenshot(page, name)``: save a PNG under pytest's tmp folder and print its path."""
    def take(page, name: str) -> Path:
        path = screenshot_dir / f"{request.node.name}-{name}.png"
        # Streamlit scrolls inside its main container, so this is the viewport (1400x1200).
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")
        return path

    return take


def scroll_to(locator) -> None:
    """Bring an element to the top of the viewport (Streamlit scrolls inside its main
    container), so that a screenshot shows what follows it."""
    locator.evaluate("e => e.scrollIntoView({block: 'start'})")
