"""The Predict page in a real browser: a group photo labelled face by face, two people enrolled
from five_celeb and one of them recognised, and a probe slider moving the probe's answer."""
from __future__ import annotations

import re

from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from bench.streamlit_server import wait_idle
from tests.browser.conftest import scroll_to

GROUP_PHOTO = "group/deepface__selfie-many-people.jpg"


def _open(page: Page, app_url: str) -> None:
    page.goto(f"{app_url}/predict")
    expect(page.get_by_role("heading", name="Predict")).to_be_visible()
    expect(page.get_by_text("Upload one or more photos")).to_be_visible()
    wait_idle(page)


def _upload(page: Page, *files) -> None:
    page.locator(".st-key-photos").get_by_test_id("stFileUploaderDropzoneInput").set_input_files(list(files))


def _no_trace(page: Page) -> None:
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_text("Traceback")).to_have_count(0)


def test_group_photo_every_face_labelled(page: Page, app_url, face_data, screenshot):
    _open(page, app_url)
    screenshot(page, "1-empty")
    _upload(page, face_data / "scenes" / GROUP_PHOTO)
    found = page.get_by_text(re.compile(r"^\d+ faces found, numbered on the photo"))
    expect(found).to_be_visible()
    wait_idle(page)
    count = int(found.inner_text().split()[0])
    assert count >= 2
    # One crop and one gender answer per face.
    expect(page.get_by_test_id("stImageCaption").filter(has_text=re.compile(r"^Face \d+$"))) \
        .to_have_count(min(count, 12))
    genders = page.get_by_test_id("stMarkdownContainer").filter(has_text=re.compile(r"^(female|male) \d+%"))
    expect(genders).to_have_count(min(count, 12))
    _no_trace(page)
    # Streamlit scrolls inside its main container: bring the labelled photo into the viewport.
    scroll_to(page.get_by_role("heading", name=GROUP_PHOTO.split("/")[1]))
    screenshot(page, "2-group-labelled")


def test_enrol_two_people_then_recognise_one(page: Page, app_url, face_data, tmp_path, screenshot):
    people = tmp_path / "people"
    for person in ("madonna", "elton_john"):
        (people / person).mkdir(parents=True)
        for photo in sorted((face_data / "five_celeb" / "train" / person).iterdir())[:4]:
            (people / person / photo.name).symlink_to(photo)
    _open(page, app_url)
    # The gallery's expander opens by itself while nobody is enrolled.
    enrol = page.get_by_test_id("stExpander").filter(has_text="Gallery: enrol people")
    folder_tab = enrol.get_by_role("tab", name="From a server folder")
    for attempt in range(3):
        try:
            folder_tab.click(timeout=20_000)
            break
        except PlaywrightTimeout:
            # Once in many CI runs this tab was not found for 2 minutes although the page had
            # rendered; never reproduced here (6 runs under full CPU load). Say what the
            # expander showed and toggle it as a user would (a closed one opens; one drawn
            # open with hidden content closes, then opens), then go on to check enrolment.
            if attempt == 2:
                raise
            is_open = enrol.locator("details").get_attribute("open") is not None
            print(f"gallery tab not clickable; expander open={is_open}:\n{enrol.aria_snapshot()}")
            enrol.locator("summary").click()
    box = page.get_by_label("Folder of class folders on the server")
    box.fill(str(people))
    box.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Enrol every person in the folder").click()
    expect(page.get_by_text("Enrolled elton_john (4), madonna (4)")).to_be_visible()
    wait_idle(page)
    screenshot(page, "1-enrolled")
    photo = sorted((face_data / "five_celeb" / "val" / "madonna").iterdir())[0]
    _upload(page, photo)
    expect(page.get_by_text(re.compile(r"^1\. madonna \(similarity 0\.\d+\)"))).to_be_visible()
    wait_idle(page)
    expect(page.get_by_text("not recognised")).to_have_count(0)
    _no_trace(page)
    scroll_to(page.get_by_role("heading", name=photo.name))
    screenshot(page, "2-recognised")


def test_probe_slider_moves_the_answer(page: Page, app_url, face_data, screenshot):
    _open(page, app_url)
    _upload(page, face_data / "scenes" / "single" / "face_recognition__obama.jpg")
    expect(page.get_by_text("Behaviour probe")).to_be_visible()
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(1)
    wait_idle(page)
    page.get_by_test_id("stPlotlyChart").scroll_into_view_if_needed()
    screenshot(page, "1-probe")
    captions = page.get_by_test_id("stImageCaption")
    before = captions.last.inner_text()
    slider = page.locator(".st-key-probe_rotation").get_by_role("slider")
    slider.focus()
    for _ in range(12):  # 12 steps of 5 degrees
        slider.press("ArrowRight")
    expect(slider).to_have_value("60")
    expect(captions.last).not_to_have_text(before)
    wait_idle(page)
    _no_trace(page)
    screenshot(page, "2-probe-rotated")


def test_bad_input_gets_clear_messages(page: Page, app_url, face_data, tmp_path, screenshot):
    """A text file named .jpg, a huge image (a PNG whose header declares 30000 x 20000 pixels:
    what a decompression bomb looks like) and a real photo with no face: one clear message each,
    no stack trace."""
    from tests.test_app import _png_header_only

    notes = tmp_path / "notes.jpg"
    notes.write_text("This is a shopping list, not a photo.\n")
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header_only(30_000, 20_000))
    no_face = face_data / "scenes" / "nonface" / "skimage__coffee.png"
    _open(page, app_url)
    _upload(page, notes, huge, no_face)
    expect(page.get_by_text(re.compile(r"^No face found in skimage__coffee\.png"))).to_be_visible()
    wait_idle(page)
    errors = page.get_by_test_id("stAlertContentError")
    expect(errors).to_have_count(2)
    expect(errors.nth(0)).to_contain_text("notes.jpg: ")
    expect(errors.nth(0)).to_contain_text("not an image")
    expect(errors.nth(1)).to_contain_text("huge.png: ")
    expect(errors.nth(1)).to_contain_text("too large")
    # No face anywhere: the probe says what it needs instead of failing.
    expect(page.get_by_text("A photo with a face and a chosen model are needed")).to_be_visible()
    _no_trace(page)
    scroll_to(page.get_by_role("heading", name="notes.jpg"))
    screenshot(page, "1-bad-input")
