"""The Evaluate page in a real browser: the reference gender model on real UTKFace chips; cards,
matrix and table appear, and choosing a confused pair in the table shows those faces."""
from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from bench.streamlit_server import wait_idle
from tests.browser.conftest import scroll_to


def test_gender_evaluation_and_error_review(page: Page, app_url, face_data, tmp_path, screenshot):
    data = tmp_path / "utk"
    for gender in ("male", "female"):
        (data / gender).mkdir(parents=True)
        for photo in sorted((face_data / "utkface_gender" / gender).iterdir())[:10]:
            (data / gender / photo.name).symlink_to(photo)
    # ?run= chooses the model: other tests may have trained runs into this server's runs root.
    page.goto(f"{app_url}/evaluate?run=reference:gender")
    expect(page.get_by_role("heading", name="Evaluate")).to_be_visible()
    wait_idle(page)
    expect(page.get_by_role("combobox", name="Model")).to_have_value(re.compile("^reference:gender"))
    page.get_by_label("Labelled folder", exact=True).and_(page.get_by_role("textbox")).fill(str(data))
    page.get_by_role("button", name="Evaluate").click()
    expect(page.get_by_test_id("stMetric").filter(has_text="Faces (n)")).to_contain_text("20")
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
    wait_idle(page)
    screenshot(page, "1-metrics-and-matrix")

    page.get_by_role("tab", name="Per class").click()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    screenshot(page, "2-per-class")

    page.get_by_role("tab", name="Error review").click()
    title = page.get_by_test_id("stMarkdownContainer").filter(has_text=re.compile(r"taken for"))
    expect(title).to_be_visible()
    first = title.inner_text()
    faces = page.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^\d\.\d\d · "))
    expect(faces.first).to_be_visible()
    scroll_to(page.get_by_text("Confused pairs"))
    screenshot(page, "3-first-pair")
    grid = page.locator(".st-key-pairs").get_by_test_id("stDataFrame")
    box = grid.bounding_box()
    rows = len(re.findall(r"taken for", first))  # one title shown at a time
    assert rows == 1
    # Glide data grid draws on a canvas: click the selection cell of the second row
    # (header and rows are 35 px high).
    # With two classes the second pair can only be the first one reversed.
    true, predicted = re.match(r"^(\w+) taken for (\w+)", first).groups()
    page.mouse.click(box["x"] + 12, box["y"] + 35 * 2 + 17)
    expect(page.get_by_text(re.compile(rf"^{predicted} taken for {true} \(\d+\)$"))).to_be_visible()
    wait_idle(page)
    expect(title).to_have_count(1)
    expect(faces.first).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    scroll_to(page.get_by_text("Confused pairs"))
    screenshot(page, "4-second-pair")
