"""The Detect page in a real browser: upload a group photo, see every face; upload junk, see why."""
from __future__ import annotations

import json
import re

from playwright.sync_api import Page, expect

# A real group photo with 4 clear faces (68..130 px wide) and its reference detections from the
# TensorFlow `mtcnn` package (mtcnn_reference/scenes.jsonl).
GROUP_PHOTO = "group/deepface__selfie-many-people.jpg"
FACE_CAPTION = re.compile(r"^Face \d+: [01]\.\d{3}$")


def _reference_faces(face_data, name: str) -> list[dict]:
    for line in (face_data / "mtcnn_reference" / "scenes.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["file"] == name:
            return record["faces"]
    raise AssertionError(f"{name} not in mtcnn_reference/scenes.jsonl")


def _open_detect_page(page: Page) -> None:
    expect(page.get_by_role("heading", name="Detect faces")).to_be_visible()
    expect(page.get_by_text("Upload one or more photos")).to_be_visible()
    # The uploader is rendered by a lazily loaded component: wait for its drop zone.
    expect(page.get_by_test_id("stFileUploaderDropzone")).to_be_visible()


def _wait_until_idle(page: Page) -> None:
    # The status widget ("Running...") is shown while a script run is in progress.
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)


def _upload(page: Page, *files) -> None:
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(list(files))


def test_group_photo_shows_every_face(page: Page, face_data, screenshot):
    photo = face_data / "scenes" / GROUP_PHOTO
    reference = _reference_faces(face_data, GROUP_PHOTO)
    sure = [face for face in reference if face["confidence"] >= 0.9]
    assert len(sure) >= 2

    _open_detect_page(page)
    _wait_until_idle(page)
    screenshot(page, "1-empty")

    _upload(page, photo)
    found = page.get_by_text(re.compile(r"^\d+ faces? found$"))
    expect(found).to_be_visible()
    _wait_until_idle(page)
    screenshot(page, "2-group-photo")

    count = int(found.inner_text().split()[0])
    captions = page.get_by_test_id("stImageCaption").filter(has_text=FACE_CAPTION)
    expect(captions).to_have_count(count)
    # Every face the reference is sure of, and at most a stray extra or two.
    assert len(sure) <= count <= len(reference) + 2, (count, len(reference))
    for text in captions.all_inner_texts():
        assert float(text.rsplit(" ", 1)[1]) >= 0.8   # the ONet threshold shown in the settings
    expect(page.get_by_text(photo.name)).to_be_visible()
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)


def test_text_file_named_jpg_gets_a_clear_error(page: Page, tmp_path, screenshot):
    fake = tmp_path / "holiday.jpg"
    fake.write_text("This is a shopping list, not a photo.\n")

    _open_detect_page(page)
    _upload(page, fake)
    error = page.get_by_test_id("stAlertContentError")
    expect(error).to_be_visible()
    _wait_until_idle(page)
    screenshot(page, "1-text-file")

    expect(error).to_have_count(1)
    expect(error).to_contain_text("holiday.jpg")
    expect(error).to_contain_text("not an image")
    # A clear message, not a stack trace.
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_text("Traceback")).to_have_count(0)


def test_mixed_upload_reports_each_photo(page: Page, face_data, tmp_path, screenshot):
    """A bad file, a photo without a face and a portrait together: each gets its own answer."""
    fake = tmp_path / "notes.jpg"
    fake.write_text("not a photo")
    dog = face_data / "scenes" / "nonface" / "dlib__dog.jpg"
    portrait = face_data / "scenes" / "single" / "face_recognition__obama.jpg"

    _open_detect_page(page)
    _upload(page, fake, dog, portrait)
    expect(page.get_by_text("1 face found", exact=True)).to_be_visible()
    _wait_until_idle(page)
    screenshot(page, "1-mixed")

    error = page.get_by_test_id("stAlertContentError")
    expect(error).to_have_count(1)
    expect(error).to_contain_text("notes.jpg")
    expect(page.get_by_text(f"No face found in {dog.name}")).to_be_visible()
    expect(page.get_by_test_id("stImageCaption").filter(has_text=FACE_CAPTION)).to_have_count(1)
    expect(page.get_by_text("3 photos, 1 face in all.")).to_be_visible()


def test_sidebar_navigation_and_device(page: Page, screenshot):
    _open_detect_page(page)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text(re.compile(r"^Device: (CPU|.+GB)"))).to_be_visible()
    sidebar.get_by_role("link", name="Predict").click()
    expect(page.get_by_role("heading", name="Predict", exact=True)).to_be_visible()
    _wait_until_idle(page)
    screenshot(page, "1-predict")
    sidebar.get_by_role("link", name="Detect").click()
    _open_detect_page(page)
