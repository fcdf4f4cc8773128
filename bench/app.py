"""Dashboard responsiveness, side by side in one run: first render, page switches, predictions.

    python bench/app.py [--photos 3] [--keep-log]

Starts the app with ``streamlit run streamlit_app.py`` on 127.0.0.1 on a free port (runs and
caches in a temporary folder: weights/ is not touched) and drives Debian's /usr/bin/chromium
through Playwright (as tests/browser do; no browser download). Rows:

- ``first render``: server start -> health endpoint answers -> the Detect page is visible;
- ``switch A -> B``: click B in the sidebar until its heading is shown and the script run ended,
  for Detect -> Predict -> Evaluate -> Detect, twice. The second round is the one a user feels
  all day; models are cached per process (st.cache_resource), so it must not be slower;
- ``prediction``: upload a real five_celeb photo on Predict and wait for its gender label: the
  first one (loads the reference gender model), then ``--photos`` more on the warm app.

The server runs in an instrumented interpreter (``--serve``: the same ``streamlit run``, with the
detector, run and reference-model constructors wrapped to print one log line each), so the
table ends with how many times each model was built: once, however many pages were visited.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script (python bench/app.py) too

from bench.streamlit_server import (CHROMIUM, CHROMIUM_ARGS, ServerNotHealthy,  # noqa: E402
                                    free_port, server_flags, stop, wait_healthy, wait_idle)

MARK = "[bench] loaded:"
TIMEOUT_MS = 300_000  # the machine may be busy: wait long, report what it took


def data_dir() -> Path:
    return Path(os.environ.get("FACE_DATA_DIR", ROOT.parent / "shared" / "data"))


# -- the instrumented server (python bench/app.py --serve PORT) -----------------------------------

def serve(port: int) -> None:
    """``streamlit run streamlit_app.py`` in this process, with model constructors that log."""
    import core.detection
    import core.models
    import core.runs

    def logged(owner, name: str, what: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            out = original(*args, **kwargs)
            print(f"{MARK} {what} in {time.perf_counter() - started:.2f} s", file=sys.stderr, flush=True)
            return out
        setattr(owner, name, wrapper)

    logged(core.detection.MTCNN, "__init__", "detector (MTCNN)")
    logged(core.models.ReferenceGender, "__init__", "reference gender model")
    logged(core.runs, "load_model", "core.runs.load_model (a run or reference:gender)")
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(ROOT / "streamlit_app.py"), *server_flags(port)]
    os.chdir(ROOT)
    cli.main()


# -- the driver ------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=3, help="predictions timed on the warm app")
    parser.add_argument("--keep-log", action="store_true", help="print the server log at the end")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    work = Path(tempfile.mkdtemp(prefix="facelab-bench-app-"))
    log = work / "streamlit.log"
    env = {**os.environ, "FACELAB_CACHE": str(work / "cache"), "FACELAB_RUNS": str(work / "runs"),
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "PYTHONPATH": str(ROOT)}
    photos = sorted((data_dir() / "five_celeb" / "val" / "madonna").iterdir())[: args.photos + 1]
    rows: list[tuple[str, float, str]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log, "wb") as out:
            started = time.perf_counter()
            server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(port)],
                                      cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        try:
            try:
                wait_healthy(url, server, log, limit=300)
            except ServerNotHealthy as exc:
                raise SystemExit(str(exc)) from None
            healthy = time.perf_counter()
            page.goto(url)
            expect(page.get_by_role("heading", name="Detect faces")).to_be_visible()
            expect(page.get_by_test_id("stFileUploaderDropzone")).to_be_visible()
            shown = time.perf_counter()
            wait_idle(page)
            rows += [("server start -> health answers", healthy - started,
                      "python, torch, streamlit imports"),
                     ("health -> Detect page visible", shown - healthy, "first script run in the browser"),
                     ("first render (server start -> page)", shown - started, "")]

            headings = {"Detect": "Detect faces", "Predict": "Predict", "Evaluate": "Evaluate"}
            here = "Detect"
            for round_ in (1, 2):
                for target in ("Predict", "Evaluate", "Detect"):
                    seconds = switch(page, expect, target, headings[target])
                    rows.append((f"switch {here} -> {target} ({'first' if round_ == 1 else 'second'} visit)",
                                 seconds, ""))
                    here = target

            switch(page, expect, "Predict", "Predict")
            labels = page.get_by_test_id("stMarkdownContainer").filter(
                has_text=re.compile(r"^(female|male) \d+%"))
            uploader = page.locator(".st-key-photos").get_by_test_id("stFileUploaderDropzoneInput")
            times = []
            for i, photo in enumerate(photos, start=1):
                t0 = time.perf_counter()
                uploader.set_input_files(photo)
                expect(labels).to_have_count(i)
                wait_idle(page)
                times.append(time.perf_counter() - t0)
            rows.append(("prediction, first photo", times[0], "loads the gender model, first detection"))
            if len(times) > 1:
                rows.append((f"prediction on the warm app (median of {len(times) - 1})",
                             statistics.median(times[1:]), " ".join(f"{t:.2f}" for t in times[1:])))
        finally:
            browser.close()
            stop(server)
    loads = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(MARK)]
    print(f"FaceLab app bench: {os.cpu_count()} cores, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} (at the end), chromium {CHROMIUM}")
    header = f"{'step':<48} {'seconds':>8}  note"
    print(header)
    print("-" * len(header))
    for name, seconds, note in rows:
        print(f"{name:<48} {seconds:>8.2f}  {note}")
    print()
    print("models built by the server over the whole session (one line each):")
    counts: dict[str, int] = {}
    for line in loads:
        what = line[len(MARK):].rsplit(" in ", 1)[0].strip()
        counts[what] = counts.get(what, 0) + 1
    for what, count in counts.items():
        print(f"  {what:<50} {count}x")
    if not counts:
        print("  (none logged)")
    print(f"server log: {log}")
    if args.keep_log:
        print(log.read_text(errors="replace"))


def switch(page, expect, name: str, heading: str) -> float:
    started = time.perf_counter()
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    wait_idle(page)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
