"""Evaluate in a real browser for a run trained IN THIS TEST by the real CLI (`python -m
core.train`) into the shared server's runs root: opened from a ?run=&data= link (as the Train
and Runs pages link it) on five_celeb; the matrix and the per-class table; a confused pair
chosen by dataframe row selection shows the misclassified faces; hovering a point of the t-SNE
map shows its face, and the points inside a dragged box show their faces below it."""
from __future__ import annotations

import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

from playwright.sync_api import Page, expect

from bench.streamlit_server import wait_idle
from tests.browser.conftest import scroll_to
from tests.conftest import ROOT, _env, five_slice

RUN = "browser-eval-r18"


def _train(app_dir: Path, face_data: Path, tmp_path: Path) -> Path:
    """A 1-epoch, 48 px resnet18 on 4 photos per person (symlinks), into the server's runs root
    and its crop cache (so the page finds the run, and the crops are cached for it)."""
    data = five_slice(face_data, tmp_path / "five-slice", train=4, val=2)
    run = app_dir / "runs" / RUN
    cmd = [sys.executable, "-m", "core.train", "--data", str(data), "--arch", "resnet18",
           "--out", str(run), "--epochs", "1", "--image-size", "48", "--batch-size", "16",
           "--device", "cpu", "--no-progress", "--seed", "0"]
    done = subprocess.run(cmd, cwd=ROOT, env=_env(app_dir / "cache"), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "checkpoint.pt").exists()
    return run


def _expected_pairs(run: Path, val: Path, cache: Path) -> list[dict]:
    """The confused pairs the page must list: the same evaluation, in this process."""
    from core.cache import CropCache
    from core.evaluate import evaluate_run

    return evaluate_run(run, val, cache=CropCache(cache), device="cpu")["confused_pairs"]


def test_evaluate_a_run_trained_here(page: Page, app_url, app_dir, face_data, tmp_path, screenshot):
    run = _train(app_dir, face_data, tmp_path)
    five = face_data / "five_celeb"
    query = urllib.parse.urlencode({"run": RUN, "data": str(five)})
    page.goto(f"{app_url}/evaluate?{query}")
    expect(page.get_by_role("heading", name="Evaluate")).to_be_visible()
    wait_idle(page)
    # The link chose the run and the held-out split of the dataset it named.
    expect(page.get_by_role("combobox", name="Model")).to_have_value(re.compile(rf"^{RUN} \(resnet18"))
    folder = page.get_by_label("Labelled folder", exact=True).and_(page.get_by_role("textbox"))
    expect(folder).to_have_value(str(five / "val"))
    page.get_by_text("More", exact=True).click()
    with_map = page.get_by_text("2-D map of the features")
    expect(with_map).to_be_visible()
    checkbox = page.get_by_role("checkbox", name=re.compile("2-D map of the features"))
    # A click that lands while the link's first reruns are still settling can be lost (the
    # rerun redraws the widget): click until it holds.
    for _ in range(5):
        if checkbox.is_checked():
            break
        with_map.click()
        wait_idle(page)
    expect(checkbox).to_be_checked()
    screenshot(page, "1-from-the-link")
    page.get_by_role("button", name="Evaluate").click()
    expect(page.get_by_test_id("stMetric").filter(has_text="Faces (n)")).to_contain_text("25")
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
    wait_idle(page)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot(page, "2-metrics-and-matrix")

    page.get_by_role("tab", name="Per class").click()
    table = page.get_by_test_id("stDataFrame").first
    expect(table).to_be_visible()
    scroll_to(page.get_by_role("tab", name="Per class"))
    screenshot(page, "3-per-class")

    pairs = _expected_pairs(run, five / "val", app_dir / "cache")
    assert pairs, "a 1-epoch run on 4 photos per person makes mistakes"
    page.get_by_role("tab", name="Error review").click()
    first = pairs[0]
    title = page.get_by_test_id("stMarkdownContainer").filter(has_text=re.compile(r"taken for"))
    expect(title.first).to_have_text(f"{first['true']} taken for {first['predicted']} ({first['count']})")
    grid = page.locator(".st-key-pairs").get_by_test_id("stDataFrame")
    scroll_to(page.get_by_text("Confused pairs"))
    chosen = pairs[1] if len(pairs) > 1 else pairs[0]
    row = 2 if len(pairs) > 1 else 1
    box = grid.bounding_box()
    # Glide data grid draws on a canvas: click the selection cell of the row (35 px rows).
    page.mouse.click(box["x"] + 12, box["y"] + 35 * row + 17)
    expect(title.first).to_have_text(
        f"{chosen['true']} taken for {chosen['predicted']} ({chosen['count']})")
    wait_idle(page)
    faces = page.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^\d\.\d\d · "))
    expect(faces.first).to_be_visible()
    assert faces.count() >= chosen["count"]  # the misclassified faces (+ examples beside them)
    scroll_to(page.get_by_text("Confused pairs"))
    screenshot(page, "4-confused-pair")

    page.get_by_role("tab", name="Map").click()
    chart = page.locator(".st-key-map [data-testid=stVegaLiteChart]")
    points = chart.locator("g.mark-symbol.role-mark > path")  # one per face (not the legend's)
    expect(points).to_have_count(25)
    expect(page.get_by_text("Select points on the map to see their faces here.")).to_be_visible()
    scroll_to(page.get_by_role("tab", name="Map"))
    # Hovering a point shows its face in the tooltip.
    points.nth(3).hover()
    expect(page.locator("#vg-tooltip-element img")).to_be_visible()
    assert page.locator("#vg-tooltip-element img").get_attribute("src").startswith("data:image/jpeg")
    screenshot(page, "5-map-hover")
    # Drag a box around every point, starting inside the chart (the edge points sit at its edge).
    frame = chart.bounding_box()
    boxes = [points.nth(i).bounding_box() for i in range(points.count())]
    left, top = max(min(b["x"] for b in boxes) - 4, frame["x"] + 1), \
        max(min(b["y"] for b in boxes) - 4, frame["y"] + 1)
    right, bottom = max(b["x"] + b["width"] for b in boxes) + 4, \
        max(b["y"] + b["height"] for b in boxes) + 4
    page.mouse.move(left, top)
    page.mouse.down()
    page.mouse.move((left + right) / 2, (top + bottom) / 2, steps=5)
    page.mouse.move(right, bottom, steps=5)
    page.mouse.up()
    selected = page.get_by_text(re.compile(r"^\d+ face\(s\) selected"))
    expect(selected).to_be_visible()
    wait_idle(page)
    n = int(selected.inner_text().split()[0])
    assert n == 25, selected.inner_text()  # every point of the map
    marked = page.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^[✗✓] "))
    expect(marked).to_have_count(25)
    errors = page.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^✗ \w+ → \w+ \d\.\d\d · "))
    assert errors.count() == sum(p["count"] for p in pairs)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    scroll_to(page.get_by_role("tab", name="Map"))
    screenshot(page, "5b-map-selection")
    scroll_to(page.get_by_text(re.compile(r"^\d+ face\(s\) selected")))
    screenshot(page, "6-selected-faces")

    # Predict, linked the same way (?run=): the run is chosen, the face labelled, and the probe
    # shows the crop beside its Grad-CAM overlay.
    page.goto(f"{app_url}/predict?{urllib.parse.urlencode({'run': RUN})}")
    expect(page.get_by_role("heading", name="Predict")).to_be_visible()
    wait_idle(page)
    expect(page.get_by_test_id("stMultiSelect")).to_contain_text(RUN)
    photo = sorted((five / "val" / "madonna").iterdir())[0]
    page.locator(".st-key-photos").get_by_test_id("stFileUploaderDropzoneInput").set_input_files(photo)
    expect(page.get_by_text(re.compile(r"^1\. \w+ \(probability 0\.\d+\)"))).to_be_visible()
    expect(page.get_by_text("Grad-CAM", exact=False).first).to_be_visible()
    expect(page.get_by_test_id("stImageCaption").filter(has_text="face crop")).to_be_visible()
    wait_idle(page)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    scroll_to(page.get_by_text(re.compile(r"^Grad-CAM")).first)
    screenshot(page, "7-predict-gradcam")
