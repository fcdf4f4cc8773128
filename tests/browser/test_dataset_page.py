"""The Dataset page in a real browser: five_celeb's counts and thumbnails, the prepare step with
its progress bar and coverage, the suspects it finds; and a one-class folder gets a clear message.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from bench.streamlit_server import wait_idle
from tests.browser.conftest import scroll_to
from tests.test_page_dataset import faulty_dataset

# The shared server starts with an empty crop cache: detecting and embedding five_celeb's 118
# photos takes 10-30 s on an idle 2-core machine, minutes when other tests run beside it.
PREPARE_TIMEOUT_MS = 900_000


def _no_trace(page: Page) -> None:
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_text("Traceback")).to_have_count(0)


def _open(page: Page, app_url: str, folder) -> None:
    page.goto(f"{app_url}/dataset")
    expect(page.get_by_role("heading", name="Dataset", exact=True)).to_be_visible()
    wait_idle(page)
    box = page.get_by_label("Dataset folder", exact=True).and_(page.get_by_role("textbox"))
    box.fill(str(folder))
    box.press("Enter")


def _metric(page: Page, label: str):
    return page.get_by_test_id("stMetric").filter(has_text=label)


@pytest.mark.timeout(1800)  # prepare on the shared server's empty cache, beside other tests
def test_five_celeb_counts_coverage_and_suspects(page: Page, app_url, face_data, screenshot):
    _open(page, app_url, face_data / "five_celeb")
    expect(_metric(page, "Photos")).to_contain_text("118")
    expect(_metric(page, "Classes")).to_contain_text("5")
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(2)
    thumbs = page.get_by_test_id("stImageCaption").filter(
        has_text=re.compile(r"^(train|val)/ben_afflek/"))
    expect(thumbs).to_have_count(12)
    wait_idle(page)
    _no_trace(page)
    screenshot(page, "1-counts-and-sizes")
    scroll_to(page.get_by_role("heading", name="Sample photos"))
    screenshot(page, "2-thumbnails")

    page.get_by_role("button", name=re.compile("^Prepare")).click()
    # The bar, unless another test already filled the shared server's caches.
    expect(page.get_by_test_id("stProgress").or_(_metric(page, "Faces found")).first) \
        .to_be_visible(timeout=PREPARE_TIMEOUT_MS)
    scroll_to(page.get_by_role("heading", name="Face coverage"))
    screenshot(page, "3-preparing")
    expect(_metric(page, "Faces found")).to_contain_text("117", timeout=PREPARE_TIMEOUT_MS)
    expect(_metric(page, "Whole-image fallbacks")).to_contain_text("1")
    expect(_metric(page, "Unreadable")).to_contain_text("0")
    wait_idle(page)
    _no_trace(page)
    scroll_to(page.get_by_role("heading", name="Face coverage"))
    screenshot(page, "4-coverage-faces")

    page.get_by_role("tab", name=re.compile(r"^Several faces \(\d+\)")).click()
    expect(page.get_by_text("the one labelled 'crop' is what training uses")).to_be_visible()
    scroll_to(page.get_by_role("heading", name="Face coverage"))
    screenshot(page, "5-several-faces")
    page.get_by_role("tab", name="Whole-image fallbacks (1)").click()
    # Every tab's content is in the page; only the chosen one is visible.
    fallback = page.get_by_test_id("stImageCaption").filter(has_text="elton_john/", visible=True)
    expect(fallback).to_have_count(1)
    screenshot(page, "6-fallback")

    # The same web photo twice in five_celeb, once in train and once in val.
    page.get_by_role("tab", name=re.compile(r"^Near duplicates \(\d+\)")).click()
    leak = page.get_by_text(re.compile(r"in train and val: a leak between splits"))
    expect(leak).to_have_count(1)
    expect(leak).to_be_visible()
    expect(page.get_by_text(re.compile(r"^distance 0\.\d{3}")).filter(visible=True)).to_have_count(3)
    scroll_to(page.get_by_role("heading", name="Suspects"))
    screenshot(page, "7-near-duplicates")
    page.get_by_role("tab", name=re.compile(r"^Possible mislabels \(\d+\)")).click()
    expect(page.get_by_text(re.compile(r"^Faces closer to another class"))).to_be_visible()
    scroll_to(page.get_by_role("heading", name="Suspects"))
    screenshot(page, "8-mislabels")
    _no_trace(page)

    # A new session (a reload, another tab) shows the coverage at once, without Prepare.
    _open(page, app_url, face_data / "five_celeb")
    expect(_metric(page, "Faces found")).to_contain_text("117")


def test_one_class_gives_a_clear_message(page: Page, app_url, face_data, tmp_path, screenshot):
    only = tmp_path / "just-madonna" / "madonna"
    only.mkdir(parents=True)
    for photo in sorted((face_data / "five_celeb" / "train" / "madonna").iterdir())[:4]:
        (only / photo.name).symlink_to(photo)
    _open(page, app_url, only.parent)
    error = page.get_by_test_id("stAlertContentError")
    expect(error).to_contain_text("only one class ('madonna')")
    expect(error).to_contain_text("needs at least two classes")
    expect(page.get_by_text("Expected layout: DATASET/<class>/*.jpg")).to_be_visible()
    wait_idle(page)
    _no_trace(page)
    expect(_metric(page, "Photos")).to_have_count(0)
    screenshot(page, "1-one-class")


def test_faults_are_shown_with_their_reasons(page: Page, app_url, face_data, tmp_path, screenshot):
    """A small copy of five_celeb with an exact copy, a ben_afflek photo filed under madonna, a
    plain colour image and a text file named .jpg."""
    root = faulty_dataset(face_data, tmp_path / "faulty")

    _open(page, app_url, root)
    expect(_metric(page, "Photos")).to_contain_text("14")
    warnings = page.get_by_test_id("stAlertContentWarning")
    expect(warnings.filter(has_text="2 classes have fewer than 10 photos")).to_have_count(1)
    expect(warnings.filter(has_text="cannot be read as images, e.g. list.jpg")).to_have_count(1)
    wait_idle(page)
    screenshot(page, "1-warnings")

    page.get_by_role("button", name=re.compile("^Prepare")).click()
    expect(_metric(page, "Unreadable")).to_contain_text("1", timeout=PREPARE_TIMEOUT_MS)
    expect(_metric(page, "Whole-image fallbacks")).to_contain_text("1")
    page.get_by_role("tab", name="Unreadable (1)").click()
    # The file and its reason: one table in the overview (header check), one in this tab.
    expect(page.get_by_test_id("stDataFrame").filter(visible=True)).to_have_count(2)
    wait_idle(page)
    scroll_to(page.get_by_role("heading", name="Face coverage"))
    screenshot(page, "2-unreadable")

    page.get_by_role("tab", name="Exact duplicates (1)").click()
    expect(page.get_by_text("2 identical files")).to_be_visible()
    scroll_to(page.get_by_role("heading", name="Suspects"))
    screenshot(page, "3-exact-duplicates")
    page.get_by_role("tab", name=re.compile(r"^Possible mislabels \(\d+\)")).click()
    moved = page.get_by_test_id("stMarkdownContainer").filter(has_text="madonna/ben.jpg", visible=True)
    expect(moved).to_contain_text("sits closer to ben_afflek")
    example = page.get_by_test_id("stImageCaption").filter(has_text="a ben_afflek face", visible=True)
    expect(example.first).to_be_visible()
    scroll_to(page.get_by_role("heading", name="Suspects"))
    screenshot(page, "4-mislabel")
    _no_trace(page)
