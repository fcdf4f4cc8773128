"""The Train page in a real browser, on the shared server (runs in ``app_dir / "runs"``).

1. Launch a tiny run (32 px, 2 epochs) on a symlinked slice of five_celeb through the page: the
   progress bar and curves update on their own, the run finishes, the final metrics and the links
   to Evaluate and Predict appear.
2. Launch a longer run, reload the browser and open a second tab during it (both find it; the
   second tab's Launch is refused), press Stop: the run is marked stopped and its checkpoint loads.
3. Bad zips (empty, ``../`` entries, text files, one class) and a missing folder: a clear message
   each.
"""
from __future__ import annotations

import io
import re
import time
import zipfile

import pytest
from playwright.sync_api import Page, expect

from bench.streamlit_server import wait_idle
from core import runs
from tests.browser.conftest import PAGE_TIMEOUT_MS
from tests.test_launcher import _kill, slice_of_five

RUN_WAIT_MS = 900_000  # first run: detect the slice's faces (30 photos) then train, 2 busy cores


@pytest.fixture
def train_page(page: Page, app_url, app_dir):
    page.goto(f"{app_url}/train")
    expect(page.get_by_role("heading", name="Train", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Launch training")).to_be_visible()
    yield page
    for run in runs.list_runs(app_dir / "runs"):  # never leave a run training for the next test
        if run.is_active and run.name.startswith("browser-"):
            _kill(run)


def _fill(page: Page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")


def _choose(page: Page, label: str, option: str) -> None:
    """Pick ``option`` in a selectbox. A rerun still settling (the Enter of the field before)
    can redraw the box and close its list as it opens, so the list is opened again if needed."""
    box = page.get_by_test_id("stSelectbox").filter(has_text=label)
    choice = page.get_by_role("option", name=option, exact=True)
    for attempt in range(3):
        wait_idle(page)
        box.locator("input").click()
        try:
            expect(choice).to_be_visible(timeout=10_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
    choice.click()
    expect(box.locator("input")).to_have_value(option)


def _set_up_run(page: Page, data, name: str, epochs: int) -> None:
    _fill(page, "Dataset folder on the server", data)
    expect(page.get_by_text(re.compile(r"^5 classes \(identity\), 30 photos"))).to_be_visible()
    _fill(page, "Epochs", epochs)
    _fill(page, "Image size (px)", 32)
    page.get_by_text("Advanced options").click()
    _fill(page, "Batch size", 8)
    _choose(page, "Device", "cpu")
    _fill(page, "Run name (optional)", name)
    wait_idle(page)


def test_launch_watch_the_curves_and_finish(train_page: Page, app_dir, face_data, tmp_path_factory,
                                            screenshot):
    page = train_page
    data = slice_of_five(face_data, tmp_path_factory.getbasetemp() / "five-slice")
    _set_up_run(page, data, "browser-tiny", epochs=2)
    screenshot(page, "1-form")
    page.get_by_role("button", name="Launch training").click()
    expect(page.get_by_role("heading", name="Training browser-tiny")).to_be_visible()
    assert "run=browser-tiny" in page.url
    assert runs.load_run(app_dir / "runs" / "browser-tiny").info["launch"]["nproc"] == 1
    screenshot(page, "2-started")

    # The fragment redraws by itself: the phase text moves on without any click or reload.
    progress = page.get_by_test_id("stProgress")
    expect(progress).to_contain_text(re.compile(r"Preparing|Training|Dataset"), timeout=RUN_WAIT_MS)
    seen = set()
    deadline = time.monotonic() + RUN_WAIT_MS / 1000
    while time.monotonic() < deadline and page.get_by_text("Run browser-tiny finished in").count() == 0:
        if progress.count():
            text = progress.first.inner_text()
            seen.add(text)
            if "Training: epoch 2/2" in text and "during" not in {s[:6] for s in seen}:
                screenshot(page, "3-training-epoch-2")
                seen.add("during")
        time.sleep(0.3)
    assert len(seen) >= 2, seen  # several distinct progress texts were shown live
    assert any(t.startswith("Training: epoch") for t in seen), seen

    expect(page.get_by_text("Run browser-tiny finished in")).to_be_visible(timeout=RUN_WAIT_MS)
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(2)
    expect(page.get_by_text("Best val accuracy")).to_be_visible()
    wait_idle(page)
    screenshot(page, "4-finished")
    evaluate = page.get_by_role("link", name="Evaluate browser-tiny")
    predict = page.get_by_role("link", name="Use browser-tiny on Predict")
    expect(evaluate).to_be_visible()
    expect(predict).to_be_visible()
    assert "run=browser-tiny" in predict.get_attribute("href")
    evaluate.click()
    expect(page.get_by_role("heading", name="Evaluate")).to_be_visible()
    expect(page.get_by_role("combobox", name="Model")).to_have_value(re.compile(r"^browser-tiny "))
    expect(page.get_by_label("Labelled folder", exact=True)).to_have_value(str(data / "val"))
    screenshot(page, "5-evaluate-linked")
    assert runs.load_run(app_dir / "runs" / "browser-tiny").status == "finished"


def test_reload_second_tab_and_stop_midway(train_page: Page, app_url, app_dir, face_data,
                                           tmp_path_factory, browser, screenshot):
    page = train_page
    data = slice_of_five(face_data, tmp_path_factory.getbasetemp() / "five-slice")
    _set_up_run(page, data, "browser-stop", epochs=400)
    page.get_by_role("button", name="Launch training").click()
    expect(page.get_by_role("heading", name="Training browser-stop")).to_be_visible()
    # Wait for an epoch to finish (so there is a best checkpoint) and for the curves.
    expect(page.get_by_test_id("stProgress")).to_contain_text("Training: epoch 2/",
                                                             timeout=RUN_WAIT_MS)
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(2)

    page.reload()
    expect(page.get_by_role("heading", name="Training browser-stop")).to_be_visible()
    expect(page.get_by_test_id("stProgress")).to_contain_text("Training: epoch")
    screenshot(page, "1-after-reload")

    # A second tab, in its own session and without the URL's ?run=, finds the same run.
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    other = context.new_page()
    try:
        other.goto(f"{app_url}/train")
        expect(other.get_by_role("heading", name="Training browser-stop")).to_be_visible()
        expect(other.get_by_text(re.compile(r"^5 classes \(identity\)"))).to_be_visible()
        other.get_by_role("button", name="Launch training").click()
        expect(other.get_by_text("run 'browser-stop' is still training")).to_be_visible()
        screenshot(other, "2-second-tab-refused")
    finally:
        context.close()
    assert [r.name for r in runs.list_runs(app_dir / "runs") if r.is_active] == ["browser-stop"]

    # (the header's "Stop" is Streamlit's own, for the script run)
    page.get_by_test_id("stBaseButton-secondary").filter(has_text="Stop").click()
    # "Stop requested" shows until the current batch ends; on a tiny batch that may be quicker
    # than the next redraw, so only the end state is asserted.
    screenshot(page, "3-stopping")
    expect(page.get_by_text("Run browser-stop was stopped")).to_be_visible(timeout=RUN_WAIT_MS)
    wait_idle(page)
    screenshot(page, "4-stopped")
    run = runs.load_run(app_dir / "runs" / "browser-stop")
    assert run.status == "stopped" and 1 <= run.metrics["epochs_run"] < 400
    model = runs.load_model(run.path, "cpu")
    assert len(model.classes) == 5


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_bad_inputs_each_get_a_clear_message(train_page: Page, face_data, tmp_path, screenshot):
    page = train_page
    _fill(page, "Dataset folder on the server", tmp_path / "nowhere")
    expect(page.get_by_test_id("stAlertContentError")).to_contain_text("dataset folder not found")
    screenshot(page, "1-missing-folder")

    photo = sorted((face_data / "five_celeb" / "train" / "madonna").iterdir())[0].read_bytes()
    zips = {
        "empty.zip": (_zip({}), "empty.zip is empty: it holds no files"),
        "escape.zip": (_zip({"people/ben/a.jpg": photo, "people/ann/b.jpg": photo,
                             "../../evil.jpg": photo}), "escape.zip was refused"),
        "texts.zip": (_zip({"people/ben/notes.txt": b"hi", "people/ann/list.txt": b"x"}),
                      "texts.zip holds no photos in class folders"),
        "one.zip": (_zip({"madonna/a.jpg": photo}), "only one class folder ('madonna')"),
    }
    page.get_by_text("Upload a zip").click()
    expect(page.get_by_test_id("stFileUploaderDropzone")).to_be_visible()
    for n, (name, (data, message)) in enumerate(zips.items(), start=2):
        path = tmp_path / name
        path.write_bytes(data)
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path))
        error = page.get_by_test_id("stAlertContentError")
        expect(error).to_contain_text(message)
        wait_idle(page)
        expect(error).to_have_count(1)
        expect(page.get_by_test_id("stException")).to_have_count(0)
        screenshot(page, f"{n}-{name}")
    page.get_by_role("button", name="Launch training").click()
    expect(page.get_by_text("Choose a dataset first")).to_be_visible()
