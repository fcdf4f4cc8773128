"""The Runs page in a real browser.

1. Two tiny runs trained with the CLI into the shared server's runs root are ticked in the table
   and compared: overlaid curves, the per-class table with its differences, the settings diff.
2. A machine crash mid-run: a training run, then the test's own server, are SIGKILLed (the open
   Runs page notices the dead trainer by itself, without a reload); the run folder stays
   consistent (run.json parses, the checkpoint loads with weights_only, a leftover temporary file
   breaks nothing and is cleaned) and a restarted server shows the run as interrupted.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from playwright.sync_api import Page, expect

from bench.streamlit_server import wait_idle
from core.checkpoint import load_checkpoint
from core.runs import CHECKPOINT, HISTORY, LAST_CHECKPOINT, RUN_JSON, load_run
from core.storage import read_jsonl
from tests.browser.conftest import PAGE_TIMEOUT_MS, scroll_to, streamlit_server
from tests.conftest import ROOT, _env, _shared_cache
from tests.test_compare import small_data, train_command, train_run

CHECKPOINT_WAIT_SECONDS = 600  # the first epoch also detects the slice's faces (2 busy cores)


def _open_runs(page: Page, url: str) -> None:
    # The root first: a fresh server that is asked for /runs before any session has run the
    # router serves pages/runs.py through Streamlit's folder-based navigation (no router).
    page.goto(url)
    expect(page.get_by_text("Device: ")).to_be_visible()  # the router ran (its sidebar)
    page.goto(f"{url}/runs")
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    wait_idle(page)
    expect(page.get_by_test_id("stDataFrame").first.locator("canvas").first).to_be_visible()


def _search(page: Page, text: str) -> None:
    box = page.get_by_label("Search name or note")
    box.fill(text)
    box.press("Enter")
    wait_idle(page)


def _tick_rows(page: Page, *rows: int) -> None:
    """Tick rows (1 = first) of the runs table. Glide data grid draws on a canvas: click the
    selection cell at the left of each row (header and rows are 35 px high)."""
    grid = page.get_by_test_id("stDataFrame").first
    expect(grid).to_be_visible()
    box = grid.bounding_box()
    for row in rows:
        page.mouse.click(box["x"] + 12, box["y"] + 35 * row + 17)
        wait_idle(page)


def test_compare_two_runs(page: Page, app_url, app_dir, tmp_path_factory, face_data, screenshot):
    data, cache = small_data(tmp_path_factory.getbasetemp(), face_data), _shared_cache(tmp_path_factory)
    train_run(data, app_dir / "runs" / "cmp-a", cache, "--epochs", "2", "--lr", "0.001")
    train_run(data, app_dir / "runs" / "cmp-b", cache, "--epochs", "2", "--lr", "0.004",
              "--no-augment", "--batch-size", "4")
    _open_runs(page, app_url)
    _search(page, "cmp-")  # other tests may have left runs on the shared server
    expect(page.get_by_text("finished: ").first).to_be_visible()
    _tick_rows(page, 1, 2)
    expect(page.get_by_role("heading", name="Compare")).to_be_visible()
    chart = page.get_by_test_id("stPlotlyChart").first
    expect(chart).to_be_visible()
    # Both runs appear in the chart's legend (one line per run and split).
    expect(chart.get_by_text("cmp-a").first).to_be_visible()
    expect(chart.get_by_text("cmp-b").first).to_be_visible()
    expect(page.get_by_text("Per-class accuracy (val, best checkpoint)")).to_be_visible()
    expect(page.get_by_text("Settings that differ")).to_be_visible()
    expect(page.get_by_text("percentage points")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot(page, "1-table-selected")
    scroll_to(page.get_by_role("heading", name="Compare"))
    screenshot(page, "2-curves-per-class-settings")
    scroll_to(page.get_by_role("heading", name="Manage"))
    expect(page.get_by_role("link", name="Evaluate cmp-")).to_be_visible()
    screenshot(page, "3-manage")


def _wait_for_checkpoint(run_dir, trainer: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + CHECKPOINT_WAIT_SECONDS
    while not (run_dir / CHECKPOINT).exists():
        if trainer.poll() is not None:
            pytest.fail(f"the training run exited early ({trainer.returncode}):\n"
                        f"{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no checkpoint after {CHECKPOINT_WAIT_SECONDS} s:\n{log.read_text()[-3000:]}")
        time.sleep(1)


def _kill_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=60)


@pytest.mark.timeout(1500)
def test_sigkill_mid_run_leaves_a_consistent_interrupted_run(browser, tmp_path, tmp_path_factory,
                                                           face_data, screenshot):
    data, cache = small_data(tmp_path_factory.getbasetemp(), face_data), _shared_cache(tmp_path_factory)
    workdir = tmp_path / "server"
    run_dir = workdir / "runs" / "crash-run"
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    page = context.new_page()
    log = tmp_path / "train.log"
    trainer = None
    try:
        with streamlit_server(workdir) as (url, server):
            # Its own session, as the Train page launches runs: a crash of the machine takes
            # both down, which is what the two SIGKILLs below stand for.
            with open(log, "wb") as out:
                trainer = subprocess.Popen(
                    train_command(data, run_dir, "--epochs", "500", "--patience", "0"),
                    cwd=ROOT, env=_env(cache), stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True)
            _wait_for_checkpoint(run_dir, trainer, log)
            _open_runs(page, url)
            expect(page.get_by_text("running: 1").first).to_be_visible()
            wait_idle(page)
            expect(page.get_by_text("this page redraws itself")).to_be_visible()
            expect(page.get_by_role("link", name="Training: crash-run")).to_be_visible()
            screenshot(page, "1-running")
            _kill_group(trainer)
            # No reload: the page notices by itself that the trainer is gone.
            expect(page.get_by_text("interrupted: 1").first).to_be_visible()
            expect(page.get_by_text("running: ")).to_have_count(0)
            wait_idle(page)
            expect(page.get_by_role("link", name="Training: crash-run")).to_have_count(0)
            screenshot(page, "1b-interrupted-without-reload")
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=60)
        assert trainer.returncode == -signal.SIGKILL

        # The folder is consistent: everything parses and the best weights load (tensors only).
        info = json.loads((run_dir / RUN_JSON).read_text())
        assert info["status"] == "running"  # what the killed trainer last wrote ...
        assert load_run(run_dir).status == "interrupted"  # ... and what it is
        best = load_checkpoint(run_dir / CHECKPOINT, arch="resnet18", classes=info["classes"])
        assert best["model_state"] and best["epoch"] >= 1
        if (run_dir / LAST_CHECKPOINT).exists():
            load_checkpoint(run_dir / LAST_CHECKPOINT)
        lines = (run_dir / HISTORY).read_text().splitlines()
        history = read_jsonl(run_dir / HISTORY)
        assert len(history) >= 1 and len(history) >= len(lines) - 1  # at most a torn last line
        leftovers = sorted(p.name for p in run_dir.glob(".*.tmp"))
        print(f"temporary files left by the kill: {leftovers or 'none'}")
        # A kill inside an atomic write leaves ".<name>.<random>.tmp" beside an intact target:
        # make sure there is one (half a checkpoint, written long ago) for the restart below.
        torn = run_dir / ".checkpoint.pt.crashed.tmp"
        torn.write_bytes((run_dir / CHECKPOINT).read_bytes()[:100_000])
        hour_ago = time.time() - 3600
        os.utime(torn, (hour_ago, hour_ago))

        with streamlit_server(workdir) as (url, _server):
            _open_runs(page, url)
            expect(page.get_by_text("interrupted: 1").first).to_be_visible()
            expect(page.get_by_text("running: ")).to_have_count(0)
            expect(page.get_by_text("Interrupted means the run was recorded as running")).to_be_visible()
            wait_idle(page)
            screenshot(page, "2-interrupted-after-restart")
            _tick_rows(page, 1)
            expect(page.get_by_text("training process is gone")).to_be_visible()
            expect(page.get_by_role("link", name="Evaluate crash-run")).to_be_visible()
            expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
            expect(page.get_by_test_id("stException")).to_have_count(0)
            scroll_to(page.get_by_role("heading", name="Manage"))
            screenshot(page, "3-interrupted-details")
        assert not list(run_dir.glob(".*.tmp")), "stale temporary files were not cleaned"
        load_checkpoint(run_dir / CHECKPOINT)
    finally:
        if trainer is not None:
            _kill_group(trainer)
        context.close()
